//! The set of boards a tool knows: the shipped ones, plus any from a user's folder.

use std::path::Path;

use crate::board::Board;
use crate::error::BoardError;

/// The board files shipped in `boards/defs/`, compiled in so tools work from anywhere.
const BUILTIN: &[(&str, &str)] = &[
    ("microbit", include_str!("../defs/microbit.toml")),
    ("nrf52840dk", include_str!("../defs/nrf52840dk.toml")),
    ("nucleo-f411re", include_str!("../defs/nucleo-f411re.toml")),
    ("rpi-pico", include_str!("../defs/rpi-pico.toml")),
];

/// Known boards, sorted by name.
#[derive(Clone, Debug)]
pub struct Catalog {
    boards: Vec<Board>,
}

impl Catalog {
    /// The shipped boards.
    pub fn builtin() -> Result<Catalog, BoardError> {
        let mut boards = Vec::with_capacity(BUILTIN.len());
        for (name, text) in BUILTIN {
            boards.push(Board::from_toml(text, &format!("{name}.toml"), Some(name))?);
        }
        Ok(Catalog { boards })
    }

    /// The shipped boards, plus every `*.toml` in `dir` (a file there replaces a shipped board of
    /// the same name).
    pub fn with_dir(dir: &Path) -> Result<Catalog, BoardError> {
        let mut catalog = Self::builtin()?;
        let io = |source| BoardError::Io { path: dir.to_path_buf(), source };
        let mut paths: Vec<_> = std::fs::read_dir(dir)
            .map_err(io)?
            .map(|entry| entry.map(|e| e.path()))
            .collect::<Result<_, _>>()
            .map_err(io)?;
        paths.retain(|p| p.extension().is_some_and(|e| e == "toml"));
        paths.sort();
        for path in paths {
            let board = Board::load(&path)?;
            catalog.boards.retain(|b| b.name != board.name);
            catalog.boards.push(board);
        }
        catalog.boards.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(catalog)
    }

    /// The board called `name`.
    pub fn get(&self, name: &str) -> Result<&Board, BoardError> {
        self.boards.iter().find(|b| b.name == name).ok_or_else(|| BoardError::Unknown {
            name: name.into(),
            known: self.boards.iter().map(|b| b.name.as_str()).collect::<Vec<_>>().join(", "),
        })
    }

    /// All boards, sorted by name.
    pub fn boards(&self) -> &[Board] {
        &self.boards
    }
}

impl Board {
    /// Reads and validates the board file at `path`; its `name` must match the file's stem.
    pub fn load(path: &Path) -> Result<Board, BoardError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| BoardError::Io { path: path.to_path_buf(), source })?;
        let file = path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned());
        Board::from_toml(&text, &file, stem.as_deref())
    }
}

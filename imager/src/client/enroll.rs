//! `imager device add --from-csv FILE --out TOKENS`: a factory line's devices enrolled in one
//! request, all of them or none, their tokens written to a file only its owner can read and
//! never printed.
//!
//! Every row is checked here before anything is sent (columns, names, ids repeated in the
//! file), and a refusal by the server, which names the device's place in the batch, is turned
//! back into the file's line number: the person who fixes the file sees where.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use ota_proto::client::{Blocking, Error};
use ota_proto::{DeviceId, DevicesEnrolled, NewDevice, NewDevices};
use serde::Serialize;

use super::explain;
use crate::write::NewPrivateFile;

/// The columns of a device list, in order (a first line naming them is a header).
pub const COLUMNS: [&str; 3] = ["id", "board", "environment"];

/// A device to enroll and the line of the file it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    /// Line number, from 1.
    pub line: usize,
    /// The device.
    pub device: NewDevice,
}

/// What `imager device add --from-csv` did (its `--json` output).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Enrolled {
    /// Devices enrolled.
    pub devices: usize,
    /// The file holding their tokens.
    pub tokens_file: PathBuf,
}

/// Reads the device list `path` (see [`parse`]).
pub fn read(path: &Path) -> Result<Vec<Row>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse(&path.display().to_string(), &text)
}

/// Parses a device list: one `id,board,environment` line per device, an optional header line
/// naming those columns, blank lines and `#` comments skipped, spaces around fields ignored.
/// The first bad line is refused as `FILE line N: what is wrong`.
pub fn parse(file: &str, text: &str) -> Result<Vec<Row>> {
    let mut rows: Vec<Row> = Vec::new();
    let mut first_line: HashMap<DeviceId, usize> = HashMap::new();
    let mut header_allowed = true;
    // A byte order mark, as spreadsheet programs write.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for (i, line) in text.lines().enumerate() {
        let number = i + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let at = |why: String| anyhow!("{file} line {number}: {why}");
        let is_header = fields.len() == COLUMNS.len()
            && fields.iter().zip(COLUMNS).all(|(f, c)| f.eq_ignore_ascii_case(c));
        if std::mem::take(&mut header_allowed) && is_header {
            continue;
        }
        let [id, board, environment] = fields[..] else {
            return Err(at(format!(
                "expected {} columns ({}), found {}",
                COLUMNS.len(),
                COLUMNS.join(","),
                fields.len()
            )));
        };
        let device = NewDevice {
            id: id.parse().map_err(|e| at(format!("{e}")))?,
            board: board.parse().map_err(|e| at(format!("{e}")))?,
            environment: environment.parse().map_err(|e| at(format!("{e}")))?,
        };
        if let Some(first) = first_line.insert(device.id.clone(), number) {
            return Err(at(format!("device {} is already on line {first}", device.id)));
        }
        rows.push(Row { line: number, device });
    }
    if rows.is_empty() {
        bail!("{file} lists no devices (one `{}` line per device)", COLUMNS.join(","));
    }
    Ok(rows)
}

/// Enrolls the devices listed in `csv` in one batch and writes their tokens to `out` (`id,token`
/// lines under a header, mode 0600). `out` must not exist; it is prepared before anything is
/// sent.
pub fn enroll(client: &Blocking, csv: &Path, out: &Path) -> Result<Enrolled> {
    let rows = read(csv)?;
    let tokens_file = NewPrivateFile::begin(out).context("--out")?;
    let batch = NewDevices { devices: rows.iter().map(|r| r.device.clone()).collect() };
    let enrolled = client
        .run(|c| c.create_devices(&batch))
        .map_err(|e| refused(&csv.display().to_string(), &rows, e))?;
    let mut text = String::from("id,token\n");
    for t in &enrolled.tokens {
        text.push_str(&format!("{},{}\n", t.id, t.token));
    }
    tokens_file.finish(text.as_bytes()).context(
        "the devices are enrolled, and the server shows their tokens only once: keep that file",
    )?;
    check_answer(&batch, &enrolled, out)?;
    Ok(Enrolled { devices: enrolled.tokens.len(), tokens_file: out.to_owned() })
}

/// Checks that the server answered one token per device, in the order asked.
fn check_answer(batch: &NewDevices, enrolled: &DevicesEnrolled, out: &Path) -> Result<()> {
    let asked = batch.devices.iter().map(|d| &d.id);
    let answered = enrolled.tokens.iter().map(|t| &t.id);
    if batch.devices.len() != enrolled.tokens.len() || !asked.eq(answered) {
        bail!(
            "the ota-server answered {} tokens for the {} devices asked, or not in their order; \
             {} holds what it answered",
            enrolled.tokens.len(),
            batch.devices.len(),
            out.display()
        );
    }
    Ok(())
}

/// The error for a failed batch: a refusal of one device names its line in `file`; and the
/// message says whether anything may have been enrolled.
fn refused(file: &str, rows: &[Row], err: Error) -> anyhow::Error {
    match &err {
        Error::Api(api) => {
            let row = place_in_batch(&api.message).and_then(|n| rows.get(n - 1));
            let Some(row) = row else {
                return anyhow!("{file}: {err}; nothing was enrolled");
            };
            let reason = without_place(&api.message).unwrap_or(&api.message);
            anyhow!(
                "{file} line {}: the ota-server refused device {}: {reason} ({}, HTTP {}); \
                 nothing was enrolled",
                row.line,
                row.device.id,
                api.code,
                api.status
            )
        }
        // The request was sent and the answer is lost or unreadable (a proxy in front may have
        // given up waiting): the server may have enrolled the batch.
        Error::Broken { .. }
        | Error::Timeout { .. }
        | Error::Decode { .. }
        | Error::Status { status: 502..=504, .. } => anyhow!(
            "{file}: {err}; the ota-server may have enrolled the devices without this command \
             seeing their tokens: check with `imager devices`"
        ),
        Error::Unreachable { .. } | Error::Setting(_) | Error::Status { .. } => {
            anyhow!("{file}: {}; nothing was enrolled", explain(err))
        }
    }
}

/// The place (from 1) of the device a batch refusal names: the server says `device N of the
/// batch ...`.
fn place_in_batch(message: &str) -> Option<usize> {
    let end = message.find(" of the batch")?;
    let number = message[..end].strip_prefix("device ")?;
    number.parse().ok().filter(|&n| n >= 1)
}

/// The refusal's reason without the place: `device 5 of the batch (x): board y is not known`
/// → `board y is not known`.
fn without_place(message: &str) -> Option<&str> {
    let rest = &message[message.find(" of the batch")? + " of the batch".len()..];
    let rest = match rest.strip_prefix(" (") {
        Some(named) => &named[named.find(')')? + 1..],
        None => rest,
    };
    rest.strip_prefix(": ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use ota_proto::client::ApiError;

    fn ids(rows: &[Row]) -> Vec<(usize, String)> {
        rows.iter().map(|r| (r.line, r.device.id.to_string())).collect()
    }

    #[test]
    fn a_list_with_header_comments_and_blank_lines() {
        let text = "\u{feff}ID, Board ,environment\r\n# line 2: a comment\n\nsn-1,microbit,test\n \
                    sn-2 , rpi-pico , prod \n";
        let rows = parse("f.csv", text).unwrap();
        assert_eq!(ids(&rows), [(4, "sn-1".into()), (5, "sn-2".into())]);
        assert_eq!(rows[1].device.board, "rpi-pico");
        assert_eq!(rows[1].device.environment, "prod");
        // Without a header the first line is a device.
        assert_eq!(ids(&parse("f.csv", "sn-1,microbit,test").unwrap()), [(1, "sn-1".into())]);
    }

    #[test]
    fn a_bad_line_is_named() {
        let err = |text: &str| parse("f.csv", text).unwrap_err().to_string();
        assert_eq!(
            err("id,board,environment\nsn-1,microbit\n"),
            "f.csv line 2: expected 3 columns (id,board,environment), found 2"
        );
        let text = err("sn-1,microbit,test\n\nsn 2,microbit,test\n");
        assert!(text.starts_with("f.csv line 3: device id \"sn 2\": 1 to 64 bytes"), "{text}");
        let text = err("sn-1,MicroBit,test\n");
        assert!(text.starts_with("f.csv line 1: board name \"MicroBit\""), "{text}");
        let text = err("sn-1,microbit,Prod!\n");
        assert!(text.starts_with("f.csv line 1: environment name \"Prod!\""), "{text}");
        assert_eq!(
            err("sn-1,microbit,test\nsn-2,microbit,test\n# again:\nsn-1,microbit,prod\n"),
            "f.csv line 4: device sn-1 is already on line 1"
        );
        assert_eq!(
            err("# nothing\nid,board,environment\n"),
            "f.csv lists no devices (one `id,board,environment` line per device)"
        );
        assert!(err("a,b,c,d").contains("found 4"));
    }

    #[test]
    fn a_refusal_names_the_line() {
        let rows = parse("f.csv", "# x\nsn-1,microbit,test\n\nsn-2,nosuch,test\n").unwrap();
        let api = |message: &str| -> Error {
            ApiError { status: 400, code: "unknown_board".into(), message: message.into() }.into()
        };
        let err = refused(
            "f.csv",
            &rows,
            api("device 2 of the batch (sn-2): board nosuch is not known to this server"),
        );
        assert_eq!(
            err.to_string(),
            "f.csv line 4: the ota-server refused device sn-2: board nosuch is not known to this \
             server (unknown_board, HTTP 400); nothing was enrolled"
        );
        let err = refused("f.csv", &rows, api("device 1 of the batch: id sn-1 appears twice"));
        assert!(err.to_string().starts_with(
            "f.csv line 2: the ota-server refused device sn-1: id sn-1 appears twice"
        ));
        // No place, or a place outside the file: the message as it is.
        let err = refused("f.csv", &rows, api("role qa may not enroll devices"));
        assert_eq!(
            err.to_string(),
            "f.csv: role qa may not enroll devices (unknown_board, HTTP 400); nothing was enrolled"
        );
        let err = refused("f.csv", &rows, api("device 9 of the batch (x): no"));
        assert!(err.to_string().starts_with("f.csv: device 9 of the batch"), "{err}");
        let lost = Error::Timeout { base: "http://h".into(), what: "POST".into(), secs: 300 };
        assert!(refused("f.csv", &rows, lost).to_string().contains("may have enrolled"));
    }

    #[test]
    fn places_in_a_batch() {
        assert_eq!(place_in_batch("device 12 of the batch (a): x"), Some(12));
        assert_eq!(place_in_batch("device 0 of the batch (a): x"), None);
        assert_eq!(place_in_batch("the device 3 of the batch"), None);
        assert_eq!(place_in_batch("board x unknown"), None);
        assert_eq!(without_place("device 3 of the batch (a:b): board x"), Some("board x"));
        assert_eq!(without_place("device 3 of the batch: id a twice"), Some("id a twice"));
        assert_eq!(without_place("device 3"), None);
    }
}

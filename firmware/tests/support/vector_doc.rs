//! Reads a test vector from a document: the ```text block after its "## Test vector" heading,
//! `name value` lines, a blank line, then the bytes in hex.

/// A documented test vector.
pub struct Documented {
    fields: Vec<(String, String)>,
    /// The bytes.
    pub bytes: Vec<u8>,
}

impl Documented {
    /// Field `name`'s value.
    pub fn field(&self, name: &str) -> &str {
        &self.fields.iter().find(|(k, _)| k == name).unwrap_or_else(|| panic!("no {name}")).1
    }
}

/// The test vector of `docs/<doc>`.
pub fn documented(doc: &str) -> Documented {
    let path = format!("{}/../docs/{doc}", env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(path).unwrap();
    let section = doc.split("## Test vector").nth(1).expect("a Test vector section");
    let block = section.split("```text\n").nth(1).unwrap().split("```").next().unwrap();
    let (head, hex_lines) = block.split_once("\n\n").expect("fields, a blank line, then hex");
    let fields = head
        .lines()
        .map(|l| {
            let (k, v) = l.split_once(' ').unwrap();
            (k.to_owned(), v.trim().to_owned())
        })
        .collect();
    let bytes = hex::decode(hex_lines.split_whitespace().collect::<String>()).unwrap();
    Documented { fields, bytes }
}

//! The test vector in `docs/image-format.md` is right: the documented bytes parse, verify with
//! the documented public key, have the documented id, and are exactly what the code builds from
//! the documented inputs today.

#[path = "../examples/test-vector.rs"]
#[allow(dead_code, missing_docs)]
mod vector;

use firmware::image::{ImageId, KeyId, TransportImage, TrustedKey};

struct Documented {
    fields: Vec<(String, String)>,
    image: Vec<u8>,
}

impl Documented {
    fn field(&self, name: &str) -> &str {
        &self.fields.iter().find(|(k, _)| k == name).unwrap_or_else(|| panic!("no {name}")).1
    }
}

/// Reads the ```text block that follows the "## Test vector" heading.
fn documented() -> Documented {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/image-format.md");
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
    let image = hex::decode(hex_lines.split_whitespace().collect::<String>()).unwrap();
    Documented { fields, image }
}

#[test]
fn documented_image_verifies_with_documented_key() {
    let doc = documented();
    let public: [u8; 32] = hex::decode(doc.field("public_key")).unwrap().try_into().unwrap();
    let key = TrustedKey::from_bytes(&public).unwrap();
    assert_eq!(key.id(), KeyId::from_hex(doc.field("key_id")).unwrap());
    assert_eq!(doc.image.len().to_string(), doc.field("length"));
    let verified = TransportImage::parse(&doc.image).unwrap().verify(&[key]).unwrap();
    assert_eq!(verified.id, ImageId::from_hex(doc.field("id")).unwrap());
}

#[test]
fn code_builds_the_documented_bytes() {
    let doc = documented();
    let (key, image) = vector::build();
    assert_eq!(doc.field("seed"), hex::encode(vector::SEED));
    assert_eq!(doc.field("public_key"), hex::encode(key.verifying_key().to_bytes()));
    assert_eq!(doc.field("os"), format!("0x00010400 {}", hex::encode(vector::os_bytes())));
    assert_eq!(doc.field("app"), format!("0x00018000 {}", hex::encode(vector::app_bytes())));
    assert_eq!(hex::encode(&image.bytes), hex::encode(&doc.image), "format or encoder changed");
}

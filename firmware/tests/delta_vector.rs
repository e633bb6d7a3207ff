//! The test vector in `docs/delta.md` is right: the documented patch rebuilds the documented
//! target (its id, signature and every component hash) from the image format's test vector
//! installed in slot A, and the code builds exactly the documented bytes today.

#[path = "../examples/delta-vector.rs"]
#[allow(dead_code, missing_docs)]
mod vector;

use firmware::delta::{PatchPrefix, apply_installed};
use firmware::image::{
    Header, ImageId, Sha256Digest, TrustedKey, installed_form, verify_signatures,
};
use sha2::{Digest, Sha256};

#[path = "support/vector_doc.rs"]
mod vector_doc;

fn documented() -> vector_doc::Documented {
    vector_doc::documented("delta.md")
}

#[test]
fn documented_patch_rebuilds_the_documented_target() {
    let doc = documented();
    let (source, _, _) = vector::build();
    let slot = installed_form(&source.bytes, vector::SLOT_START, 0xFF).unwrap();
    let rebuilt = apply_installed(&slot, &doc.bytes, vector::SLOT_START, 0xFF).unwrap();
    let header = Header::parse(&rebuilt).unwrap();
    assert_eq!(header.id(), ImageId::from_hex(doc.field("target")).unwrap());
    let prefix = PatchPrefix::parse(&doc.bytes).unwrap();
    assert_eq!(prefix.source, ImageId::from_hex(doc.field("source")).unwrap());
    assert_eq!(doc.bytes.len().to_string(), doc.field("length"));
    let (key, _) = vector::image_vector::build();
    let trusted = TrustedKey::from_bytes(&key.verifying_key().to_bytes()).unwrap();
    verify_signatures(&header, &[trusted]).unwrap();
    for component in header.manifest().components() {
        let at = (component.load_address() - vector::SLOT_START) as usize;
        let bytes = &rebuilt[at..at + component.size() as usize];
        let digest = Sha256Digest(Sha256::digest(bytes).into());
        assert_eq!(digest, Sha256Digest(*component.sha256()), "{}", component.name());
    }
}

#[test]
fn code_builds_the_documented_bytes() {
    let doc = documented();
    let (source, target, patch) = vector::build();
    assert_eq!(doc.field("source"), source.id.to_string());
    assert_eq!(doc.field("target"), target.id.to_string());
    assert_eq!(doc.field("os"), format!("0x00010400 {}", hex::encode(vector::os_bytes())));
    assert_eq!(doc.field("app"), format!("0x00018000 {}", hex::encode(vector::app_bytes())));
    assert_eq!(hex::encode(&patch.bytes), hex::encode(&doc.bytes), "format or encoder changed");
}

//! The test vector in `docs/image-format.md` is right: the documented bytes parse, verify with
//! the documented public key, have the documented id, and are exactly what the code builds from
//! the documented inputs today.

#[path = "../examples/test-vector.rs"]
#[allow(dead_code, missing_docs)]
mod vector;

use firmware::image::{ImageId, KeyId, TransportImage, TrustedKey};

#[path = "support/vector_doc.rs"]
mod vector_doc;

fn documented() -> vector_doc::Documented {
    vector_doc::documented("image-format.md")
}

#[test]
fn documented_image_verifies_with_documented_key() {
    let doc = documented();
    let public: [u8; 32] = hex::decode(doc.field("public_key")).unwrap().try_into().unwrap();
    let key = TrustedKey::from_bytes(&public).unwrap();
    assert_eq!(key.id(), KeyId::from_hex(doc.field("key_id")).unwrap());
    assert_eq!(doc.bytes.len().to_string(), doc.field("length"));
    let verified = TransportImage::parse(&doc.bytes).unwrap().verify(&[key]).unwrap();
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
    assert_eq!(hex::encode(&image.bytes), hex::encode(&doc.bytes), "format or encoder changed");
}

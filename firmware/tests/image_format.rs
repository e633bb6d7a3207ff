//! Image format v1 end to end inside the `firmware` crate: build, parse, verify, and refuse
//! every kind of damage without panicking.

use ed25519_dalek::SigningKey;
use firmware::image::{
    ComponentSource, Compression, EncodedImage, HeatshrinkParams, ImageError, ImageSpec,
    MAX_WINDOW, ManifestError, Prefix, Role, SlotLayout, TransportImage, TrustedKey, UnpackError,
    Unpacker, Version, encode_image,
};

/// A tiny deterministic generator, so failures reproduce.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn trusted(key: &SigningKey) -> TrustedKey {
    TrustedKey::from_bytes(&key.verifying_key().to_bytes()).unwrap()
}

/// Code-like bytes: repetitive enough to compress, varied enough to exercise back-references.
fn code_like(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed | 1);
    let words = [0x4770_u16, 0xB510, 0xBD10, 0x2000, 0x6803, 0x4618, 0xF000, 0xE7FE];
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        let w = if rng.below(4) == 0 { rng.next() as u16 } else { words[rng.below(8)] };
        out.extend_from_slice(&w.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn spec(compression: Option<HeatshrinkParams>) -> ImageSpec {
    ImageSpec {
        board: "microbit".into(),
        version: "1.2.3-rc.1".parse().unwrap(),
        security_counter: 7,
        compression,
        components: vec![
            ComponentSource {
                role: Role::App,
                name: "app".into(),
                load_address: 0x1_8000,
                bytes: code_like(3000, 2),
            },
            ComponentSource {
                role: Role::Os,
                name: "os".into(),
                load_address: 0x1_0400,
                bytes: code_like(5000, 1),
            },
            ComponentSource {
                role: Role::Data,
                name: "fonts".into(),
                load_address: 0x2_0000,
                bytes: (0..=255).collect(),
            },
        ],
        slot: Some(SlotLayout { start: 0x1_0000, size: 0x1_7000, header_size: 0x400 }),
    }
}

fn build(compression: Option<HeatshrinkParams>) -> EncodedImage {
    encode_image(&spec(compression), &[key(1)]).unwrap()
}

#[test]
fn round_trip_every_compression() {
    let mut options: Vec<Option<HeatshrinkParams>> =
        HeatshrinkParams::SUPPORTED.iter().copied().map(Some).collect();
    options.push(None);
    for compression in options {
        let image = build(compression);
        let parsed = TransportImage::parse(&image.bytes).unwrap();
        let verified = parsed.verify(&[trusted(&key(1))]).unwrap();
        assert_eq!(verified.id, image.id);
        assert_eq!(parsed.header().manifest(), &image.manifest);
        let names: Vec<&str> =
            image.manifest.components().iter().map(|c| c.name().as_str()).collect();
        assert_eq!(names, ["os", "app", "fonts"], "sorted by address");
        let os = &image.manifest.components()[0];
        match compression {
            Some(params) => assert_eq!(os.compression(), Compression::Heatshrink(params)),
            None => assert_eq!(os.compression(), Compression::Raw),
        }
        // 256 distinct bytes do not compress: carried raw whatever was asked.
        assert_eq!(image.manifest.components()[2].compression(), Compression::Raw);
    }
}

#[test]
fn decoding_does_not_depend_on_chunk_sizes() {
    let image = build(Some(HeatshrinkParams::DEFAULT));
    let parsed = TransportImage::parse(&image.bytes).unwrap();
    let mut rng = Rng(99);
    for (component, _, payload) in parsed.payloads() {
        let sources = spec(None).components;
        let original = &sources.iter().find(|s| s.name == component.name().as_str()).unwrap().bytes;
        for round in 0..20 {
            let mut window = [0u8; MAX_WINDOW];
            let mut unpacker = Unpacker::new(component, &mut window).unwrap();
            let mut out = Vec::new();
            let mut rest = payload;
            while !rest.is_empty() {
                let n = if round == 0 { 1 } else { 1 + rng.below(rest.len().min(300)) };
                unpacker
                    .feed(&rest[..n], &mut |b: &[u8]| {
                        out.extend_from_slice(b);
                        Ok::<(), ()>(())
                    })
                    .unwrap();
                rest = &rest[n..];
            }
            unpacker.finish().unwrap();
            assert_eq!(&out, original);
        }
    }
}

#[test]
fn same_inputs_same_bytes() {
    let a = build(Some(HeatshrinkParams::DEFAULT));
    let b = build(Some(HeatshrinkParams::DEFAULT));
    assert_eq!(a.bytes, b.bytes);
    let other_key = encode_image(&spec(Some(HeatshrinkParams::DEFAULT)), &[key(2)]).unwrap();
    assert_eq!(other_key.id, a.id, "the id names content, not the signer");
    assert_ne!(other_key.bytes, a.bytes);
}

#[test]
fn every_header_byte_matters() {
    let image = build(Some(HeatshrinkParams::DEFAULT));
    let keys = [trusted(&key(1))];
    for offset in 0..image.header_len {
        for flip in [0x01u8, 0x80, 0xFF] {
            let mut bad = image.bytes.clone();
            bad[offset] ^= flip;
            let result = TransportImage::parse(&bad).and_then(|t| t.verify(&keys));
            assert!(result.is_err(), "flip {flip:#x} at header byte {offset} went unnoticed");
        }
    }
}

#[test]
fn payload_damage_is_caught() {
    let image = build(Some(HeatshrinkParams::DEFAULT));
    let keys = [trusted(&key(1))];
    let mut rng = Rng(7);
    for _ in 0..400 {
        let offset = image.header_len + rng.below(image.bytes.len() - image.header_len);
        let mut bad = image.bytes.clone();
        bad[offset] ^= 1 << rng.below(8);
        let err = TransportImage::parse(&bad).unwrap().verify(&keys).unwrap_err();
        assert!(matches!(err, ImageError::Component { .. }), "byte {offset}: {err}");
    }
}

#[test]
fn truncation_at_any_length_is_an_error() {
    let image = build(Some(HeatshrinkParams::DEFAULT));
    for len in 0..image.bytes.len() {
        let err = TransportImage::parse(&image.bytes[..len]).unwrap_err();
        assert!(
            matches!(err, ImageError::TruncatedHeader { .. } | ImageError::TruncatedPayload { .. }),
            "length {len}: {err}"
        );
    }
    let mut long = image.bytes.clone();
    long.push(0);
    assert_eq!(TransportImage::parse(&long).unwrap_err(), ImageError::TrailingData { extra: 1 });
}

#[test]
fn keys_are_checked() {
    let image = build(None);
    let parsed = TransportImage::parse(&image.bytes).unwrap();
    let err = parsed.verify(&[trusted(&key(2))]).unwrap_err();
    assert!(matches!(err, ImageError::UnknownKey { .. }), "{err}");
    assert!(err.to_string().contains(&trusted(&key(1)).id().to_string()), "{err}");
    // A second, untrusted co-signature does not matter; a trusted one must verify.
    let both = encode_image(&spec(None), &[key(1), key(2)]).unwrap();
    let parsed = TransportImage::parse(&both.bytes).unwrap();
    assert_eq!(parsed.verify(&[trusted(&key(2))]).unwrap().key, trusted(&key(2)).id());
    let mut forged = both.bytes.clone();
    let second_signature = both.header_len - 10;
    forged[second_signature] ^= 1;
    let parsed = TransportImage::parse(&forged).unwrap();
    assert!(parsed.verify(&[trusted(&key(1))]).is_ok());
    assert_eq!(
        parsed.verify(&[trusted(&key(1)), trusted(&key(2))]).unwrap_err(),
        ImageError::BadSignature(trusted(&key(2)).id())
    );
}

#[test]
fn builder_refuses_what_the_format_forbids() {
    let mut outside = spec(None);
    outside.components[1].load_address = 0x1_0100; // the os, inside the reserved header space
    let err = encode_image(&outside, &[key(1)]).unwrap_err();
    assert!(err.to_string().contains("outside slot A's image area"), "{err}");

    let mut overlap = spec(None);
    overlap.components[0].load_address = 0x1_0400 + 4000;
    let err = encode_image(&overlap, &[key(1)]).unwrap_err().to_string();
    assert!(err.contains("\"os\"") && err.contains("\"app\"") && err.contains("overlap"), "{err}");

    assert!(encode_image(&spec(None), &[]).is_err());
    assert!(encode_image(&spec(None), &[key(1), key(1)]).is_err());
}

#[test]
fn corrupt_streams_never_panic() {
    // Random bytes as a heatshrink payload: decoding must end in an error or a hash mismatch.
    let image = build(Some(HeatshrinkParams::DEFAULT));
    let parsed = TransportImage::parse(&image.bytes).unwrap();
    let os = parsed.header().manifest().components()[0].clone();
    let mut rng = Rng(1234);
    for _ in 0..300 {
        let garbage: Vec<u8> = (0..os.stored_size()).map(|_| rng.next() as u8).collect();
        let mut window = [0u8; MAX_WINDOW];
        let mut unpacker = Unpacker::new(&os, &mut window).unwrap();
        let fed = unpacker.feed(&garbage, &mut |_: &[u8]| Ok::<(), ()>(()));
        if fed.is_ok() {
            assert!(unpacker.finish().is_err());
        }
    }
    // Feeding more than the stored size is refused.
    let mut window = [0u8; MAX_WINDOW];
    let mut unpacker = Unpacker::new(&os, &mut window).unwrap();
    let too_much = vec![0u8; os.stored_size() as usize + 1];
    assert!(unpacker.feed(&too_much, &mut |_: &[u8]| Ok::<(), ()>(())).is_err());
}

#[test]
fn random_streams_with_every_pair_never_panic() {
    // Random heatshrink streams, fed in random chunks, for every supported pair; tests run with
    // overflow checks on, so an arithmetic slip in the decoder would panic here.
    let mut rng = Rng(0x9876_5432_1FED_CBA9);
    let name = firmware::image::ComponentName::try_from("os").unwrap();
    for round in 0..4000 {
        let params = HeatshrinkParams::SUPPORTED[round % HeatshrinkParams::SUPPORTED.len()];
        let stream: Vec<u8> = (0..1 + rng.below(600)).map(|_| rng.next() as u8).collect();
        let installed = vec![0u8; 1 + rng.below(5000)];
        let component = firmware::image::Component::new(
            Role::Os,
            name.clone(),
            0,
            &installed,
            Compression::Heatshrink(params),
            stream.len() as u32,
        );
        let mut window = [0u8; MAX_WINDOW];
        let mut unpacker = Unpacker::new(&component, &mut window).unwrap();
        let mut rest = &stream[..];
        let mut failed = false;
        while !rest.is_empty() && !failed {
            let n = 1 + rng.below(rest.len());
            failed = unpacker.feed(&rest[..n], &mut |_: &[u8]| Ok::<(), ()>(())).is_err();
            rest = &rest[n..];
        }
        if !failed {
            assert!(
                unpacker.finish().is_err(),
                "random bytes decoded to zeros with the right hash"
            );
        }
    }
}

#[test]
fn random_files_never_panic() {
    let image = build(Some(HeatshrinkParams::DEFAULT));
    let keys = [trusted(&key(1))];
    let mut rng = Rng(42);
    for _ in 0..2000 {
        let mut bad = image.bytes.clone();
        for _ in 0..1 + rng.below(8) {
            let at = rng.below(bad.len());
            bad[at] = rng.next() as u8;
        }
        let cut = rng.below(bad.len() + 1);
        let _ = TransportImage::parse(&bad[..cut]).and_then(|t| t.verify(&keys));
    }
    for len in 0..64 {
        let junk: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        assert!(TransportImage::parse(&junk).is_err());
    }
}

#[test]
fn prefix_reports_specific_problems() {
    let image = build(None);
    let mut bad = image.bytes.clone();
    bad[0] = b'X';
    assert_eq!(Prefix::parse(&bad), Err(ImageError::NotAnImage));
    let mut bad = image.bytes.clone();
    bad[4] = 2;
    assert_eq!(Prefix::parse(&bad), Err(ImageError::UnsupportedFormat(2)));
    let mut bad = image.bytes.clone();
    bad[12] = 1;
    assert_eq!(Prefix::parse(&bad), Err(ImageError::ReservedByte { offset: 12 }));
    let mut bad = image.bytes.clone();
    bad[8] = 9;
    assert_eq!(Prefix::parse(&bad), Err(ImageError::SignatureCount(9)));
    let mut bad = image.bytes.clone();
    bad[6..8].copy_from_slice(&0xFFFFu16.to_le_bytes());
    assert!(matches!(Prefix::parse(&bad), Err(ImageError::ManifestLength { len: 0xFFFF, .. })));
}

#[test]
fn manifest_errors_name_the_problem() {
    let mut s = spec(None);
    s.components[2].name = "Fonts!".into();
    let err = encode_image(&s, &[key(1)]).unwrap_err();
    assert!(matches!(err, firmware::image::EncodeError::Manifest(ManifestError::ComponentName(_))));
    let mut s = spec(None);
    s.components.retain(|c| c.role == Role::Data);
    assert!(encode_image(&s, &[key(1)]).unwrap_err().to_string().contains("needs an `os`"));
}

#[test]
fn unpack_errors_are_specific() {
    let image = build(None);
    let parsed = TransportImage::parse(&image.bytes).unwrap();
    let (os, _, payload) = parsed.payloads().next().unwrap();
    let mut window = [0u8; MAX_WINDOW];
    let mut unpacker = Unpacker::new(os, &mut window).unwrap();
    unpacker.feed(&payload[..10], &mut |_: &[u8]| Ok::<(), ()>(())).unwrap();
    assert!(matches!(unpacker.finish(), Err(UnpackError::StoredSize { given: 10, .. })));
    let mut changed = payload.to_vec();
    changed[0] ^= 1;
    let mut window = [0u8; MAX_WINDOW];
    let mut unpacker = Unpacker::new(os, &mut window).unwrap();
    unpacker.feed(&changed, &mut |_: &[u8]| Ok::<(), ()>(())).unwrap();
    assert!(matches!(unpacker.finish(), Err(UnpackError::HashMismatch { .. })));
    let _ = Version::new(0, 0, 0);
}

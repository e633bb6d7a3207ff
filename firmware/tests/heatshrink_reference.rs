//! Our heatshrink streams are the reference format: byte for byte what the reference C encoder
//! (atomicobject/heatshrink, wrapped by PyPI's `heatshrink2`) writes, and decodable both ways.
//!
//! `vectors/heatshrink/` holds inputs and the reference encoder's output for every supported
//! window/lookahead pair (made by `make.py` there). The live test runs the reference code on
//! more inputs; it needs `python3 -m pip install heatshrink2`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use firmware::image::{
    Component, ComponentName, Compression, HeatshrinkParams, Role, Unpacker, compress,
};

fn vectors() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/heatshrink")
}

/// Decodes `stream` through the device path: an [`Unpacker`] for a component of `original`.
fn unpack(params: HeatshrinkParams, stream: &[u8], original: &[u8]) -> Vec<u8> {
    let component = Component::new(
        Role::Os,
        ComponentName::try_from("os").unwrap(),
        0x1000,
        original,
        Compression::Heatshrink(params),
        stream.len() as u32,
    );
    let mut unpacker = Unpacker::new(&component);
    let mut out = Vec::new();
    for chunk in stream.chunks(7) {
        unpacker
            .feed(chunk, &mut |b: &[u8]| {
                out.extend_from_slice(b);
                Ok::<(), ()>(())
            })
            .unwrap();
    }
    unpacker.finish().unwrap();
    out
}

#[test]
fn committed_reference_vectors() {
    let mut checked = 0;
    for entry in std::fs::read_dir(vectors()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "bin") {
            continue;
        }
        let input = std::fs::read(&path).unwrap();
        for &params in HeatshrinkParams::SUPPORTED {
            let name = format!(
                "{}.w{}l{}.hs",
                path.file_stem().unwrap().to_string_lossy(),
                params.window(),
                params.lookahead()
            );
            let reference = std::fs::read(vectors().join(&name)).unwrap();
            assert_eq!(compress(params, &input), reference, "{name}: encoder differs from C");
            assert_eq!(unpack(params, &reference, &input), input, "{name}: decoder differs");
            checked += 1;
        }
    }
    assert_eq!(checked, 4 * HeatshrinkParams::SUPPORTED.len());
}

/// Runs the reference C code through python: `mode` is encode or decode.
fn reference(mode: &str, params: HeatshrinkParams, data: &[u8]) -> Vec<u8> {
    let script = format!(
        "import sys, heatshrink2; d = sys.stdin.buffer.read(); \
         sys.stdout.buffer.write(heatshrink2.{mode}(d, window_sz2={}, lookahead_sz2={}))",
        params.window(),
        params.lookahead()
    );
    let mut child = Command::new("python3")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 is needed for the heatshrink cross-check");
    let mut stdin = child.stdin.take().unwrap();
    let input = data.to_vec();
    let writer = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(
        out.status.success(),
        "the reference heatshrink is needed: python3 -m pip install heatshrink2\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn live_cross_check_with_the_reference_c_code() {
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
    let mut inputs: Vec<Vec<u8>> = vec![
        std::fs::read(fixtures.join("microbit/app.bin")).unwrap(),
        std::fs::read(fixtures.join("microbit/os.elf")).unwrap(),
        vec![0xFF; 5000],
        vec![7],
    ];
    for len in [1usize, 2, 255, 256, 257, 4095, 4096, 4097, 20000] {
        // Mixed runs and noise: long matches, short matches and literals.
        let mut v = Vec::with_capacity(len);
        while v.len() < len {
            let r = next();
            match r % 3 {
                0 => v.extend(std::iter::repeat_n((r >> 8) as u8, (r >> 16) as usize % 40)),
                1 => v.extend_from_slice(&r.to_le_bytes()),
                _ => {
                    let back = ((r >> 8) as usize % 3000).min(v.len());
                    let start = v.len() - back;
                    let take = ((r >> 24) as usize % 64).min(back);
                    v.extend_from_within(start..start + take);
                }
            }
        }
        v.truncate(len);
        inputs.push(v);
    }
    for input in &inputs {
        for &params in HeatshrinkParams::SUPPORTED {
            let ours = compress(params, input);
            let theirs = reference("encode", params, input);
            assert_eq!(
                ours,
                theirs,
                "encoder differs from C for {} bytes, {params:?}",
                input.len()
            );
            assert_eq!(reference("decode", params, &ours), *input, "C cannot decode ours");
            assert_eq!(unpack(params, &theirs, input), *input, "we cannot decode C's");
        }
    }
}

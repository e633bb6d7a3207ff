//! Our heatshrink streams are the reference format: byte for byte what the reference C encoder
//! (atomicobject/heatshrink, wrapped by PyPI's `heatshrink2`) writes, and decodable both ways.
//!
//! `vectors/heatshrink/` holds inputs and the reference encoder's output for every supported
//! window/lookahead pair (made by `make.py` there). The live test runs the reference code on
//! more inputs; it needs `python3 -m pip install heatshrink2`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use firmware::image::{
    Component, ComponentName, Compression, HeatshrinkParams, MAX_WINDOW, Role, Unpacker, compress,
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
    let mut window = [0u8; MAX_WINDOW];
    let mut unpacker = Unpacker::new(&component, &mut window).unwrap();
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

/// The reference C code, in one python process serving framed requests: mode (b'e' encode or
/// b'd' decode), window, lookahead, u32 length, bytes; answered by u32 length, bytes.
struct Reference {
    child: std::process::Child,
}

const SERVER: &str = r#"
import sys, struct, heatshrink2
inp, out = sys.stdin.buffer, sys.stdout.buffer
while True:
    head = inp.read(7)
    if len(head) < 7:
        break
    mode, w, l, n = struct.unpack("<cBBI", head)
    data = inp.read(n)
    f = heatshrink2.encode if mode == b"e" else heatshrink2.decode
    res = f(data, window_sz2=w, lookahead_sz2=l)
    out.write(struct.pack("<I", len(res)) + res)
    out.flush()
"#;

impl Reference {
    fn start() -> Self {
        let child = Command::new("python3")
            .args(["-c", SERVER])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 is needed for the heatshrink cross-check");
        Reference { child }
    }

    fn call(&mut self, mode: u8, params: HeatshrinkParams, data: &[u8]) -> Vec<u8> {
        use std::io::{Read, Write};
        let hint = "the reference heatshrink is needed: python3 -m pip install heatshrink2";
        let stdin = self.child.stdin.as_mut().unwrap();
        let mut request = vec![mode, params.window(), params.lookahead()];
        request.extend_from_slice(&(data.len() as u32).to_le_bytes());
        request.extend_from_slice(data);
        stdin.write_all(&request).and_then(|()| stdin.flush()).expect(hint);
        let stdout = self.child.stdout.as_mut().unwrap();
        let mut len = [0u8; 4];
        stdout.read_exact(&mut len).expect(hint);
        let mut reply = vec![0u8; u32::from_le_bytes(len) as usize];
        stdout.read_exact(&mut reply).expect(hint);
        reply
    }
}

impl Drop for Reference {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
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
    let mut reference = Reference::start();
    for input in &inputs {
        for &params in HeatshrinkParams::SUPPORTED {
            let ours = compress(params, input);
            let theirs = reference.call(b'e', params, input);
            assert_eq!(
                ours,
                theirs,
                "encoder differs from C for {} bytes, {params:?}",
                input.len()
            );
            assert_eq!(reference.call(b'd', params, &ours), *input, "C cannot decode ours");
            assert_eq!(unpack(params, &theirs, input), *input, "we cannot decode C's");
        }
    }
}

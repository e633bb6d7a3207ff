//! `imager`: fuse, sign, inspect and verify firmware images. See `imager --help`.

use std::process::ExitCode;

fn main() -> ExitCode {
    imager::cli::main()
}

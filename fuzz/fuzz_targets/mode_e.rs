//! MODE E (GFD.20 extended block mode) data-channel reading (`transfer::gridftp::data`): a
//! stream of block headers and data, as a hostile server could send it, is written by offset
//! into a file or refused with a `TransferError` — never a panic, never a write outside what
//! the headers announced.
//!
//! Input: one byte choosing the receive buffer size (small, to exercise the paths for blocks
//! larger than the buffer and for coalescing), then the stream.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::os::unix::fs::FileExt;
use vws::transfer::gridftp::data::fuzz_receive_blocks;

thread_local! {
    static FILE: std::fs::File = tempfile();
}

fn tempfile() -> std::fs::File {
    let p = std::env::temp_dir().join(format!("vws-fuzz-mode-e-{}", std::process::id()));
    let f = std::fs::OpenOptions::new().create(true).truncate(true).read(true).write(true).open(&p).unwrap();
    let _ = std::fs::remove_file(&p);
    f
}

fuzz_target!(|data: &[u8]| {
    let Some((&b, stream)) = data.split_first() else { return };
    let buf_size = 1 + (b as usize % 64);
    let base = (b as u64 >> 6) * 7;
    FILE.with(|f| {
        f.set_len(0).unwrap();
        let _ = fuzz_receive_blocks(stream, f, base, buf_size);
        let mut probe = [0u8; 1];
        let _ = f.read_at(&mut probe, 0);
    });
});

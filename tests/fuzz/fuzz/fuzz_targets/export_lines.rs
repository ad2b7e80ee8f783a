//! libFuzzer target: [`confstore_fuzz::export_lines`].

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| confstore_fuzz::export_lines(data));

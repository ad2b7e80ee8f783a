//! libFuzzer target: [`confstore_fuzz::rest_json`].

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| confstore_fuzz::rest_json(data));

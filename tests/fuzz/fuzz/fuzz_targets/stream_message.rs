//! libFuzzer target: [`confstore_fuzz::stream_message`].

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| confstore_fuzz::stream_message(data));

//! libFuzzer target: [`confstore_fuzz::event_body`].

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| confstore_fuzz::event_body(data));

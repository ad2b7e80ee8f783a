//! libFuzzer target: [`confstore_fuzz::secret_open`].

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| confstore_fuzz::secret_open(data));

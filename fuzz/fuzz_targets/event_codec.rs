//! The binary event codec on arbitrary bytes: never panics; what decodes
//! re-encodes to exactly the same bytes (the encoding is canonical) and is
//! not a truncated event; every strict prefix of it is one.
#![no_main]

use floe_engine::{decode_event, encode_event, encoded_len, is_truncated_event};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match decode_event(data) {
        Ok(event) => {
            let mut out = Vec::new();
            encode_event(&event, &mut out);
            assert_eq!(out, data);
            assert_eq!(encoded_len(&event), data.len());
            assert!(!is_truncated_event(data));
            for cut in [0, data.len() / 2, data.len() - 1] {
                assert!(decode_event(&data[..cut]).is_err());
                assert!(is_truncated_event(&data[..cut]));
            }
        }
        Err(_) => {
            let _ = is_truncated_event(data);
        }
    }
});

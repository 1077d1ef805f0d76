//! The log's segment check on arbitrary bytes, as the last segment of a
//! partition and as a sealed one: never panics, the valid frames it reports
//! tile the file up to its verdict, a torn verdict only on the last segment,
//! and what a torn tail leaves is clean.
#![no_main]

use floe_emitter::{SegmentVerdict, check_segment};
use floe_engine::{decode_event, encode_event};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for last in [true, false] {
        let check = check_segment(data, last);
        let end = match &check.verdict {
            SegmentVerdict::Clean => data.len(),
            SegmentVerdict::TornTail { at, .. } | SegmentVerdict::Corrupt { at, .. } => {
                *at as usize
            }
        };
        assert!(end <= data.len());
        let mut pos = 0;
        for payload in &check.payloads {
            assert_eq!(payload.start, pos + 8, "frames follow each other");
            assert!(payload.end > payload.start && payload.end <= end);
            pos = payload.end;
            // What decodes re-encodes to the same bytes.
            if let Ok(event) = decode_event(&data[payload.clone()]) {
                let mut out = Vec::new();
                encode_event(&event, &mut out);
                assert_eq!(out, &data[payload.clone()]);
            }
        }
        assert_eq!(pos, end, "the valid frames end where the verdict starts");
        match check.verdict {
            SegmentVerdict::TornTail { at, .. } => {
                assert!(last, "a sealed segment has no torn tail");
                let rest = check_segment(&data[..at as usize], true);
                assert_eq!(rest.verdict, SegmentVerdict::Clean);
                assert_eq!(rest.payloads, check.payloads);
            }
            SegmentVerdict::Clean => assert_eq!(end, data.len()),
            SegmentVerdict::Corrupt { .. } => {}
        }
    }
});

//! Any bytes as an HTTP request or response: parsing must not panic, and
//! what it accepts stays within the limits.
#![no_main]

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;
use vt_http::{read_request, read_response, Limits};

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_head: 512,
        max_headers: 8,
        max_body: 256,
    };
    let mut c = Cursor::new(data);
    // Pipelined requests until the input runs out or fails.
    while let Ok(r) = read_request(&mut c, &limits) {
        assert!(r.body.len() <= limits.max_body);
        assert!(r.headers.len() <= limits.max_headers);
        let _ = (r.keep_alive(), r.query_param("a"));
    }
    if let Ok(r) = read_response(&mut Cursor::new(data), &limits) {
        assert!(r.body.len() <= limits.max_body);
    }
});

//! Requests on plexusd's control socket, read as plexusd reads them: one
//! line (at most `MAX_LINE` bytes, UTF-8), a plexus-agent-api `Request`,
//! answered by `ctlsock::dispatch` (with no network model installed, as
//! before the routed network is ready); and the answer lines clients read
//! (`Answer<T>::from_line`).
//!
//! Input: the bytes a client sends. Must hold: no panic; every request gets
//! a JSON object back (the status, or an error with its text); a request,
//! written as clients write it, reads back as the same request.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plexus_agent_api::{Allocation, Answer, BgpStatus, GcDone, Released, Request, Status};
use plexus_fuzz::invariant;
use plexusd::ctlsock::{dispatch, Handlers};
use plexusd::status::Shared;

fuzz_target!(|data: &[u8]| {
    // read_line on the connection, bounded as plexusd bounds it.
    let data = &data[..data.len().min(plexus_agent_api::MAX_LINE as usize)];
    let line = match data.iter().position(|b| *b == b'\n') {
        Some(i) => &data[..=i],
        None => data,
    };
    let Ok(line) = std::str::from_utf8(line) else {
        return;
    };
    if let Ok(req) = serde_json::from_str::<Request>(line) {
        let wire = req.to_line();
        match serde_json::from_slice::<Request>(&wire) {
            Ok(back) => invariant!(back == req, "{back:?} != {req:?}"),
            Err(e) => panic!(
                "{req:?} as {:?} does not read back: {e}",
                String::from_utf8_lossy(&wire)
            ),
        }
    }
    let answer =
        futures::executor::block_on(dispatch(line, &Shared::default(), &Handlers::default()));
    let obj = answer.as_object();
    invariant!(
        obj.is_some_and(
            |o| o.contains_key("ready") || o.get("error").is_some_and(|e| e.is_string())
        ),
        "{line:?}: {answer}"
    );

    // The client side: the same bytes as an answer line.
    let _ = Answer::<Allocation>::from_line(line);
    let _ = Answer::<Released>::from_line(line);
    let _ = Answer::<GcDone>::from_line(line);
    let _ = Answer::<BgpStatus>::from_line(line);
    let _ = Answer::<Status>::from_line(line);
});

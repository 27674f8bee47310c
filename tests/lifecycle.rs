//! Container life: clean shutdown, crash (kill -9) and restart with resources and their
//! termination times intact, scheduled destruction across restarts.

mod common;
use common::*;
use std::time::{Duration, Instant};

fn get_tt(s: &Server, key: &str) -> HttpResponse {
    s.call(
        "WorkspaceService",
        &Server::ws_key_header(key),
        &format!("{WSRP_ACTION}/GetResourceProperty"),
        &format!("<GetResourceProperty xmlns=\"{WSRP}\" xmlns:l=\"{WSRL}\">l:TerminationTime</GetResourceProperty>"),
    )
}

fn set_tt(s: &Server, key: &str, when: &str) -> HttpResponse {
    s.call(
        "WorkspaceService",
        &Server::ws_key_header(key),
        &format!("{WSRL_ACTION}/SetTerminationTime"),
        &format!("<SetTerminationTime xmlns=\"{WSRL}\"><RequestedTerminationTime>{when}</RequestedTerminationTime></SetTerminationTime>"),
    )
}

fn in_ms(ms: i64) -> String {
    vws::wsrf::time::format_ms(vws::wsrf::time::now_ms() + ms)
}

#[test]
fn resources_survive_kill9_and_expired_ones_are_destroyed_on_schedule() {
    let mut s = Server::start();
    let keep = s.create_workspace();
    let short = s.create_workspace();
    let later = s.create_workspace();
    let counter = s.create_counter("CounterService");
    assert_eq!(set_tt(&s, &short, &in_ms(1500)).status, 200);
    assert_eq!(set_tt(&s, &later, &in_ms(4000)).status, 200);
    let tt_before = between(&get_tt(&s, &keep).body, "TerminationTime xmlns:p=\"", "</").map(str::to_string);
    let rows_before = s.db_dump();
    assert_eq!(rows_before.len(), 4);

    s.kill9();
    // Down while `short` expires.
    std::thread::sleep(Duration::from_millis(2000));
    s.restart();

    let r = get_tt(&s, &keep);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(between(&r.body, "TerminationTime xmlns:p=\"", "</").map(str::to_string), tt_before);
    let r = s.call(
        "CounterService",
        &Server::counter_key_header(&counter),
        &format!("{WSRP_ACTION}/GetResourceProperty"),
        &format!("<GetResourceProperty xmlns=\"{WSRP}\" xmlns:c=\"{COUNTER}\">c:Value</GetResourceProperty>"),
    );
    assert!(r.body.contains(">0</ns1:Value>"), "{}", r.body);

    // `short` expired while vwsd was down: gone right after restart.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let r = get_tt(&s, &short);
        if r.status == 500 {
            assert_eq!(r.fault_kind().as_deref(), Some("ResourceUnknownFault"), "{}", r.body);
            break;
        }
        assert!(Instant::now() < deadline, "expired resource still there after restart");
        std::thread::sleep(Duration::from_millis(50));
    }
    // `later` still alive now, destroyed on schedule after the restart.
    assert_eq!(get_tt(&s, &later).status, 200);
    let deadline = Instant::now() + Duration::from_secs(6);
    while get_tt(&s, &later).status == 200 {
        assert!(Instant::now() < deadline, "resource not destroyed at its termination time");
        std::thread::sleep(Duration::from_millis(50));
    }
    let keys: Vec<String> = s.db_dump().into_iter().map(|r| r.1).collect();
    assert!(keys.contains(&keep) && keys.contains(&counter));
    assert!(!keys.contains(&short) && !keys.contains(&later));
    assert!(s.log().contains("termination time reached"));
}

#[test]
fn sigterm_shuts_down_cleanly_and_store_reopens() {
    let mut s = Server::start();
    let key = s.create_workspace();
    let status = s.terminate();
    assert!(status.success(), "exit status {status:?}");
    assert!(s.log().contains("vwsd stopped"), "{}", s.log());
    // WAL checkpointed into the database file on close.
    let wal = s.data_dir().join("vws.db-wal");
    assert!(std::fs::metadata(&wal).map(|m| m.len() == 0).unwrap_or(true), "WAL not checkpointed");
    s.restart();
    assert_eq!(get_tt(&s, &key).status, 200);
}

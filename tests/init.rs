//! The real binary against the simulator: every behaviour the README and docs/ promise.

mod common;

use std::time::{Duration, Instant};

use common::{assert_formed, cluster, run, run_with, writes};
use couchsim::Fault;

#[test]
fn forms_three_fresh_nodes_and_says_what_it_did() {
    let c = cluster(3, |b| b);
    let r = run(&c);
    r.assert_code(0);
    assert_formed(&c);
    // Every phase is logged, with its duration.
    r.assert_says(&[
        "wait:",
        "identify:",
        "preflight:",
        "join:",
        "converge:",
        "finish:",
        "verify:",
        "done in",
    ]);
    r.assert_says(&["cluster of 3 nodes verified"]);
    // One join per added node, on the coordinator only, and one finish_cluster.
    assert_eq!(c.node(0).count("PUT"), 2);
    assert_eq!(c.node(0).count("POST"), 1);
    assert_eq!(c.node(1).count("PUT") + c.node(2).count("PUT"), 0);
}

#[test]
fn waits_for_nodes_that_come_up_late_in_any_order() {
    let c = cluster(3, |b| {
        b.configure(0, |n| n.stopped())
            .configure(2, |n| n.stopped())
    });
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(300));
            c.node(2).start();
            std::thread::sleep(Duration::from_millis(300));
            c.node(0).start();
        });
        let r = run(&c);
        r.assert_code(0);
        r.assert_says(&["not answering yet"]); // what it waits for
    });
    assert_formed(&c);
}

#[test]
fn a_second_run_on_a_formed_cluster_writes_nothing() {
    let c = cluster(3, |b| b);
    run(&c).assert_code(0);
    c.reset_counters();
    let r = run(&c);
    r.assert_code(0);
    assert_eq!(c.count_writes(), 0, "writes on rerun: {:?}", writes(&c));
    r.assert_says(&["nothing written"]);
}

#[test]
fn growing_from_three_to_four_joins_only_the_new_node() {
    let mut c = cluster(3, |b| b);
    run(&c).assert_code(0);
    c.add_node(|n| n);
    c.reset_counters();
    let r = run(&c);
    r.assert_code(0);
    assert_formed(&c);
    assert_eq!(
        common::puts(&c),
        vec![format!("PUT /_node/_local/_nodes/{}", c.node(3).name())]
    );
    // finish_cluster copied the coordinator's admin hash to the new node.
    assert_eq!(
        c.node(3).config("admins", "admin"),
        c.node(0).config("admins", "admin")
    );
}

#[test]
fn a_wrong_password_stops_at_once_without_locking_the_account() {
    let c = cluster(3, |b| b);
    let r = run_with(&c, &[("COUCHDB_PASSWORD", "wrong-password")]);
    common::assert_stopped_at_a_wrong_password(&c, &r);
}

#[test]
fn a_node_that_never_comes_up_is_named_within_the_deadline() {
    let c = cluster(3, |b| b.configure(2, |n| n.stopped()));
    let started = Instant::now();
    let r = run_with(&c, &[("COUCHDB_INIT_TIMEOUT", "2s")]);
    let took = started.elapsed();
    r.assert_code(3);
    let third = common::label(&c, 2);
    r.assert_says(&[&third]);
    assert!(took < Duration::from_secs(3), "took {took:?}, deadline 2s");
    assert_eq!(c.count_writes(), 0);
}

#[test]
fn a_cookie_mismatch_is_named() {
    let c = cluster(3, |b| b.configure(2, |n| n.cookie("another-cookie")));
    let r = run_with(&c, &[("COUCHDB_INIT_TIMEOUT", "5s")]);
    r.assert_code(7);
    let third = common::label(&c, 2);
    r.assert_says(&[&third, "cookie"]);
    // Never finished on a partial membership (trap 1).
    assert_eq!(c.node(0).count("POST"), 0);
}

/// The last membership poll before the deadline has only what is left of it: a node that gets
/// slow then must not turn the diagnosis of the cookie into "timed out".
#[test]
fn the_cookie_diagnosis_survives_a_last_poll_that_times_out() {
    let c = cluster(3, |b| b.configure(2, |n| n.cookie("another-cookie")));
    let r = std::thread::scope(|s| {
        s.spawn(|| {
            // Once the join is done and converge has had one answer from the third node (it
            // is recorded before it is sent), its answers come later than the deadline.
            let until = Instant::now() + Duration::from_secs(20);
            let wait_for = |done: &dyn Fn() -> bool| {
                while !done() && Instant::now() < until {
                    std::thread::sleep(Duration::from_millis(2));
                }
            };
            let memberships = || {
                let requests = c.node(2).requests();
                requests.iter().filter(|r| r.path == "/_membership").count()
            };
            wait_for(&|| c.node(0).count("PUT") >= 2);
            let before_converge = memberships();
            wait_for(&|| memberships() > before_converge);
            c.node(2).inject(Fault::Slow(Duration::from_secs(8)));
        });
        run_with(&c, &[("COUCHDB_INIT_TIMEOUT", "5s")])
    });
    c.node(2).clear_faults();
    r.assert_code(7);
    r.assert_says(&[&common::label(&c, 2), "cookie"]);
}

#[test]
fn a_node_without_nodename_is_a_configuration_error() {
    let c = cluster(3, |b| b.configure(1, |n| n.nonode()));
    let r = run(&c);
    r.assert_code(2);
    r.assert_says(&["nonode@nohost", &common::label(&c, 1)]);
    assert_eq!(c.count_writes(), 0);
}

#[test]
fn a_node_already_holding_databases_is_refused_and_nothing_is_written() {
    let c = cluster(3, |b| b);
    c.node(1).create_db("mydb");
    let r = run(&c);
    r.assert_code(5);
    r.assert_says(&[&common::label(&c, 1), "mydb"]);
    assert_eq!(c.count_writes(), 0, "{:?}", writes(&c));
}

#[test]
fn a_node_that_finished_alone_is_refused() {
    let c = cluster(3, |b| b);
    c.node(2).finish_alone();
    let r = run(&c);
    r.assert_code(5);
    r.assert_says(&[&common::label(&c, 2), "_users"]);
    assert_eq!(c.count_writes(), 0);
}

#[test]
fn finish_cluster_timing_out_sends_it_back_to_converge() {
    let c = cluster(3, |b| b);
    c.node(0).inject(Fault::FailNth {
        method: "POST".into(),
        path: "/_cluster_setup".into(),
        nth: 1,
        status: 500,
    });
    let r = run(&c);
    r.assert_code(0);
    assert_eq!(c.node(0).count("POST"), 2, "finish_cluster asked twice");
    r.assert_says(&["converging again"]);
    assert_formed(&c);
}

#[test]
fn config_drift_is_repaired_by_finish_cluster() {
    let c = cluster(3, |b| b);
    run(&c).assert_code(0);
    c.node(1).rehash_admin();
    assert_ne!(
        c.node(1).config("admins", "admin"),
        c.node(0).config("admins", "admin")
    );
    c.reset_counters();
    let r = run(&c);
    r.assert_code(0);
    r.assert_says(&["drift", &common::label(&c, 1)]);
    assert_eq!(
        c.node(1).config("admins", "admin"),
        c.node(0).config("admins", "admin")
    );
    assert_eq!(writes(&c), vec!["POST /_cluster_setup".to_string()]);
}

#[test]
fn check_is_read_only_and_tells_formed_from_not_formed() {
    let c = cluster(3, |b| b);
    let r = common::run_args(&c, &["check"], &[]);
    assert_ne!(
        r.code, 0,
        "an unformed cluster is not healthy:\n{}",
        r.stderr
    );
    assert_eq!(c.count_writes(), 0);
    run(&c).assert_code(0);
    c.reset_counters();
    common::run_args(&c, &["check"], &[]).assert_code(0);
    c.node(2).rehash_admin();
    common::run_args(&c, &["check"], &[]).assert_code(6);
    assert_eq!(c.count_writes(), 0);
}

#[test]
fn maintenance_mode_is_waited_out_and_reported() {
    let c = cluster(3, |b| b);
    c.node(1)
        .inject(Fault::Maintenance("maintenance_mode".into()));
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(400));
            c.node(1).clear_faults();
        });
        let r = run(&c);
        r.assert_code(0);
        r.assert_says(&["maintenance_mode"]);
    });
}

#[test]
fn malformed_json_from_a_node_is_an_error_not_a_panic() {
    let c = cluster(3, |b| b);
    c.node(1).inject(Fault::MalformedJson {
        path: "/_membership".into(),
    });
    let r = run(&c);
    r.assert_code(1);
    r.assert_says(&[&common::label(&c, 1), "JSON"]);
    assert_eq!(c.count_writes(), 0);
}

#[test]
fn an_oversized_body_from_a_node_is_an_error_not_a_panic() {
    let c = cluster(3, |b| b);
    c.node(2).inject(Fault::HugeBody {
        path: "/_all_dbs".into(),
        bytes: 40 * 1024 * 1024,
    });
    let r = run(&c);
    r.assert_code(1);
    r.assert_says(&[&common::label(&c, 2), "larger than"]);
    assert_eq!(c.count_writes(), 0);
}

#[test]
fn no_secret_reaches_any_output_even_at_trace_level() {
    let c = cluster(3, |b| b.secret("chttpd-secret-value"));
    c.node(1).rehash_admin(); // forces the drift path too, which reads and compares secrets
    let r = run_with(&c, &[("RUST_LOG", "trace")]);
    r.assert_code(0);
    let out = format!("{}{}", r.stdout, r.stderr);
    assert!(
        out.contains("TRACE") || out.contains("DEBUG"),
        "trace logging was on:\n{out}"
    );
    for secret in [
        common::PASSWORD,
        common::COOKIE,
        "chttpd-secret-value",
        "YWRtaW46", // base64 of "admin:" — the Authorization header
        "pbkdf2",   // the admin hash
    ] {
        assert!(!out.contains(secret), "`{secret}` leaked:\n{out}");
    }
    // And a failing run, whose errors carry node answers.
    let r = run_with(
        &c,
        &[
            ("RUST_LOG", "trace"),
            ("COUCHDB_PASSWORD", "wrong-but-secret"),
        ],
    );
    r.assert_code(4);
    assert!(!format!("{}{}", r.stdout, r.stderr).contains("wrong-but-secret"));
}

#[test]
fn bad_configuration_exits_2_naming_the_variable() {
    let c = cluster(1, |b| b);
    for (var, value) in [
        ("COUCHDB_NODES", ""),
        ("COUCHDB_INIT_TIMEOUT", "ten"),
        ("COUCHDB_COOKIE", "monster"),
        ("COUCHDB_COORDINATOR", "elsewhere"),
    ] {
        let r = run_with(&c, &[(var, value)]);
        r.assert_code(2);
        r.assert_says(&[var]); // assert_code has already checked for a panic
    }
    assert_eq!(
        c.requests().len(),
        0,
        "nothing sent before the configuration is valid"
    );
}

#[test]
fn an_environment_variable_that_is_not_utf8_is_named_not_a_panic() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let c = cluster(1, |b| b);
    let not_utf8 = OsStr::from_bytes(b"pw-\xff");
    let with = |var: &str, args: &[&str]| {
        let mut cmd = common::command(&c, args, &[]);
        cmd.env(var, not_utf8)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        common::finish((cmd.spawn().expect("spawn"), std::time::Instant::now()))
    };
    let r = with("COUCHDB_PASSWORD", &["check"]);
    r.assert_code(2);
    r.assert_says(&["COUCHDB_PASSWORD", "UTF-8"]);
    assert_eq!(c.requests().len(), 0, "nothing sent");
    // A variable that is none of ours does not matter.
    with("SOMEONE_ELSES", &["init"]).assert_code(0);
}

#[test]
fn forms_under_the_recorded_couchdb_timings() {
    // Slow first logins (PBKDF2), 40–100 ms `_nodes` copies and, one time in five, a copy that
    // takes a second: an added node shows every node connected but only itself as member.
    for seed in [1, 2, 3] {
        let c = common::cluster(3, |b| b.delays(couchsim::Delays::default()).seed(seed));
        run(&c).assert_code(0);
        assert_formed(&c);
    }
}

#[test]
fn a_dotless_erlang_name_is_refused_before_anything_is_written() {
    let c = cluster(3, |b| b.configure(1, |n| n.name("couchdb@couchdb-2")));
    let r = run(&c);
    r.assert_code(2);
    r.assert_says(&["couchdb@couchdb-2", "dot"]);
    assert_eq!(c.count_writes(), 0);
}

#[test]
fn a_stopped_member_fails_the_rerun_naming_it() {
    let c = cluster(3, |b| b);
    run(&c).assert_code(0);
    c.node(1).stop();
    let r = run_with(&c, &[("COUCHDB_INIT_TIMEOUT", "1s")]);
    r.assert_code(3);
    r.assert_says(&[&common::label(&c, 1)]);
}

#[test]
fn with_expect_below_the_node_count_forms_those_up_and_a_rerun_joins_the_rest() {
    let c = cluster(4, |b| b.configure(3, |n| n.stopped()));
    let r = run_with(&c, &[("COUCHDB_EXPECT", "3")]);
    r.assert_code(0);
    r.assert_says(&["left for a later run", &common::label(&c, 3)]);
    let (_, members) = c.node(0).membership();
    assert_eq!(members.len(), 3, "{members:?}");
    c.node(3).start();
    run_with(&c, &[("COUCHDB_EXPECT", "3")]).assert_code(0);
    assert_formed(&c);
}

mod common;
#[test]
fn show() {
    let mut c = common::cluster(3, |b| b);
    common::run(&c).assert_code(0);
    c.node(0).create_db_q_n("old", 2, 3);
    let ids: Vec<String> = (0..200).map(|i| format!("doc{i:03}")).collect();
    c.node(0).write_docs("old", &ids);
    c.add_node(|n| n);
    c.add_node(|n| n);
    common::run(&c).assert_code(0);
    for args in [
        &["status"][..],
        &["rebalance"],
        &["status", "old"],
        &["rebalance"],
        &["remove", "node3@127.0.0.1"],
        &["status"],
    ] {
        c.reset_counters();
        let r = common::run_args(&c, args, &[]);
        println!(
            "{args:?} CODE {} writes {}\nSTDOUT\n{}\nSTDERR\n{}",
            r.code,
            c.count_writes(),
            r.stdout,
            r.stderr
        );
    }
}

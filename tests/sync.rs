//! Synchronous replication across the upgrade: `synchronous_standby_names` is carried, so
//! commits on the new primary wait for a standby that cannot connect until it is rebuilt.
//! `check` says so, and pgleap's own work on the new server (here an extension update) does
//! not wait for one.

mod common;

use std::time::Duration;

use common::{Fixture, Run};

/// pgleap, killed and failed after three minutes: a commit waiting for a synchronous standby
/// that never comes would otherwise hang the test forever.
fn pgleap_bounded(args: &[String]) -> Run {
    common::pgleap_within(args, Duration::from_secs(180))
}

#[test]
fn a_synchronous_standby_list_is_warned_of_and_never_waited_for() {
    let fx = Fixture::new(16).running().build();
    // 16's pg_stat_statements is 1.10, 17's 1.11: the upgrade runs ALTER EXTENSION UPDATE.
    fx.sql("postgres", "CREATE EXTENSION pg_stat_statements");
    fx.sql(
        "postgres",
        "ALTER SYSTEM SET synchronous_standby_names = 'FIRST 1 (s1)'",
    );
    fx.sql("postgres", "SELECT pg_reload_conf()");

    let check = pgleap_bounded(&fx.args("check", 17, &[]));
    check.success();
    assert!(
        check.stderr.contains("synchronous_standby_names is 'FIRST 1 (s1)' and is carried: from the new server's start, every commit that asks for synchronous replication waits for a standby it names, and none can connect until the standbys are rebuilt for the new cluster, so clients' writes hang until then"),
        "{}",
        check.stderr
    );

    let run = pgleap_bounded(&fx.args("upgrade", 17, &["--mode", "link"]));
    run.success();
    assert!(
        run.stderr.contains("synchronous-standbys")
            || run
                .stderr
                .contains("synchronous_standby_names is 'FIRST 1 (s1)'"),
        "{}",
        run.stderr
    );
    let sql = |q: &str| common::psql(17, &fx.socket, fx.port, &fx.superuser, "postgres", q);
    assert_eq!(
        sql("SELECT extversion FROM pg_extension WHERE extname = 'pg_stat_statements'").trim(),
        "1.11"
    );
    // Carried as it was: the administrator's choice, for when the standbys are back.
    assert_eq!(sql("SHOW synchronous_standby_names").trim(), "FIRST 1 (s1)");
}

//! Clone mode where the filesystem shares extents: a loop-mounted XFS image with reflink=1
//! (root only: mkfs, losetup and mount).

mod common;

use std::path::PathBuf;

use common::reflink::ReflinkFs;
use common::{Fixture, start_server, stop_server};

#[test]
fn check_chooses_clone_on_a_reflink_filesystem() {
    let Some(fs) = ReflinkFs::mount_or_skip("check_chooses_clone_on_a_reflink_filesystem") else {
        return;
    };
    let fx = Fixture::new(16).root_in(fs.path()).running().build();
    let before = common::snapshot(fx.root.path());

    let run = fx.pgleap(fx.args("check", 17, &["--mode", "auto", "--json"]));
    run.success();
    let doc = run.json();
    assert_eq!(doc["ok"], true);
    assert_eq!(
        doc["plan"]["mode"], "clone",
        "{}",
        doc["plan"]["mode_reason"]
    );
    assert!(
        doc["plan"]["mode_reason"]
            .as_str()
            .unwrap()
            .contains("reflinks"),
        "{}",
        doc["plan"]["mode_reason"]
    );
    // check changes nothing beside the cluster (its scratch cluster is gone again).
    let after = common::snapshot(fx.root.path());
    let added: Vec<&PathBuf> = after
        .keys()
        .filter(|p| !before.contains_key(*p))
        .filter(|p| !p.starts_with(fx.datadir.strip_prefix(fx.root.path()).unwrap()))
        .collect();
    assert!(added.is_empty(), "check left {added:?}");
    drop(fx);
}

#[test]
fn clone_upgrade_keeps_every_row_and_the_old_cluster() {
    let Some(fs) = ReflinkFs::mount_or_skip("clone_upgrade_keeps_every_row_and_the_old_cluster")
    else {
        return;
    };
    let fx = Fixture::new(16).root_in(fs.path()).rich().running().build();
    let before = fx.contents(16, 17, fx.port);
    assert!(
        before.rows.len() >= 8,
        "fixture too small: {:?}",
        before.rows
    );

    let run = fx.pgleap(fx.args("upgrade", 17, &["--mode", "clone", "--json"]));
    run.success();
    let doc = run.json();
    assert_eq!(doc["ok"], true);
    assert_eq!(doc["plan"]["mode"], "clone");
    assert_eq!(doc["new_running"], true);
    let version = fx.sql("postgres", "SHOW server_version_num");
    assert!(version.starts_with("17"), "new server answers as {version}");
    before.assert_same(&fx.contents(17, 17, fx.port));

    // Clones share extents but not writes: the old cluster still starts, with its data.
    let new = fx.new_datadir(17);
    stop_server(17, &new);
    start_server(16, &fx.datadir, &fx.root.path().join("server-16-again.log"));
    let version = fx.sql("postgres", "SHOW server_version_num");
    assert!(version.starts_with("16"), "old server answers as {version}");
    assert_eq!(
        before.rows,
        fx.checksums(16, fx.port),
        "old cluster changed"
    );
    drop(fx);
}

//! Clone mode where the filesystem shares extents: a loop-mounted XFS image with reflink=1
//! (root only: mkfs, losetup and mount).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Fixture, chown, is_root, start_server, stop_server};

/// A 512 MiB XFS filesystem with reflinks, loop-mounted on a fresh directory owned by the
/// cluster owner. Dropping it unmounts, detaches the loop device and removes the image.
struct ReflinkFs {
    image: tempfile::TempPath,
    device: Option<String>,
    mountpoint: tempfile::TempDir,
    mounted: bool,
}

fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl ReflinkFs {
    /// Mounts one, or returns None (after saying why) when not root. Any other failure to set
    /// it up fails the test: a silent pass would hide that clone mode went untested.
    fn mount_or_skip(test: &str) -> Option<ReflinkFs> {
        if !is_root() {
            eprintln!("{test}: skipped, needs root (mkfs.xfs, losetup, mount)");
            return None;
        }
        match ReflinkFs::mount() {
            Ok(fs) => Some(fs),
            Err(e) => panic!(
                "{test}: cannot set up a loop-mounted XFS with reflinks: {e}\n\
                 This test needs root, xfsprogs (mkfs.xfs) and loop devices (/dev/loop-control)."
            ),
        }
    }

    fn mount() -> Result<ReflinkFs, String> {
        // /var/tmp, not /tmp: /tmp is a tmpfs on many machines, where the image would live in
        // memory; /var/tmp is on disk by convention.
        let image = tempfile::Builder::new()
            .prefix("pgleap-xfs-")
            .suffix(".img")
            .tempfile_in("/var/tmp")
            .map_err(|e| format!("cannot create an image file in /var/tmp: {e}"))?;
        image
            .as_file()
            .set_len(512 * 1024 * 1024)
            .map_err(|e| format!("cannot size the image: {e}"))?;
        let image = image.into_temp_path();
        let mountpoint = tempfile::Builder::new()
            .prefix("pgleap-xfs-")
            .tempdir_in("/tmp")
            .map_err(|e| format!("cannot create a mount point: {e}"))?;
        let mut fs = ReflinkFs {
            image,
            device: None,
            mountpoint,
            mounted: false,
        };
        let image = fs.image.display().to_string();
        run("mkfs.xfs", &["-q", "-m", "reflink=1", &image])?;
        fs.device = Some(run("losetup", &["--find", "--show", &image])?);
        let device = fs.device.clone().unwrap_or_default();
        run(
            "mount",
            &[&device, &fs.mountpoint.path().display().to_string()],
        )?;
        fs.mounted = true;
        chown(fs.path());
        Ok(fs)
    }

    fn path(&self) -> &Path {
        self.mountpoint.path()
    }
}

impl Drop for ReflinkFs {
    fn drop(&mut self) {
        let mountpoint = self.mountpoint.path().display().to_string();
        if self.mounted && run("umount", &[&mountpoint]).is_err() {
            // Something still holds it (a server that would not stop): detach it lazily.
            if let Err(e) = run("umount", &["-l", &mountpoint]) {
                eprintln!("cannot unmount {mountpoint}: {e}");
            }
        }
        if let Some(device) = &self.device {
            if let Err(e) = run("losetup", &["-d", device]) {
                eprintln!("cannot detach {device}: {e}");
            }
        }
    }
}

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

//! A loop-mounted XFS filesystem with reflinks (root only: mkfs, losetup and mount), for
//! tests of what pgleap does where extents can be shared.

use std::path::Path;
use std::process::Command;

use super::{chown, is_root};

/// A 512 MiB XFS filesystem with reflinks, loop-mounted on a fresh directory owned by the
/// cluster owner. Dropping it unmounts, detaches the loop device and removes the image.
pub struct ReflinkFs {
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
    pub fn mount_or_skip(test: &str) -> Option<ReflinkFs> {
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

    pub fn path(&self) -> &Path {
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

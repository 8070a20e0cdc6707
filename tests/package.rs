//! The Debian package where it would be installed: `scripts/package` builds the .deb, and a
//! clean Debian 12 container (`--network none`) with Debian's postgresql-15 and a PostgreSQL
//! 17 installation installs it, finds its man pages, runs `--help`, completes `pgleap up<TAB>`
//! through bash-completion, upgrades a `pg_createcluster` cluster 15 -> 17 with it, and
//! removes it (`docker/test/package.sh` does the work inside the container).
//!
//! The engine and the images come from `scripts/test-images`; where no engine can start, the
//! test says so in one line and passes. `PGLEAP_TEST_DEB=path` tests that package instead of
//! building one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[track_caller]
fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The engine's variables from `scripts/test-images`, or `None` (after saying why) when no
/// engine can run here.
fn engine() -> Option<BTreeMap<String, String>> {
    if let Ok(why) = std::env::var("PGLEAP_TEST_ENGINE_SKIP") {
        eprintln!("package: skipped: {why}");
        return None;
    }
    // scripts/test has made the engine and the images already.
    if let (Ok(host), Ok(image)) = (
        std::env::var("DOCKER_HOST"),
        std::env::var("PGLEAP_TEST_IMAGE_DEBIAN_SYSTEMD"),
    ) {
        let mut env = BTreeMap::from([
            ("DOCKER_HOST".to_string(), host),
            ("PGLEAP_TEST_IMAGE_DEBIAN_SYSTEMD".to_string(), image),
        ]);
        if let Ok(docker) = std::env::var("PGLEAP_TEST_DOCKER") {
            env.insert("PGLEAP_TEST_DOCKER".into(), docker);
        }
        return Some(env);
    }
    let out = Command::new(repo().join("scripts/test-images"))
        .output()
        .unwrap();
    if out.status.code() == Some(77) {
        let why = String::from_utf8_lossy(&out.stderr);
        eprintln!(
            "package: skipped: {}",
            why.lines().last().unwrap_or("no container engine")
        );
        return None;
    }
    let text = ok(&out, "scripts/test-images");
    Some(
        text.lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

/// The .deb: `PGLEAP_TEST_DEB`, or `scripts/package --profile dev`: the binary these tests
/// run, packaged by the same script and metadata as a release (a release build would double
/// the suite's build time).
fn package() -> PathBuf {
    if let Ok(deb) = std::env::var("PGLEAP_TEST_DEB") {
        return PathBuf::from(deb);
    }
    let out = Command::new(repo().join("scripts/package"))
        .args(["--profile", "dev"])
        .output()
        .unwrap();
    repo().join(ok(&out, "scripts/package").trim())
}

fn docker(env: &BTreeMap<String, String>) -> Command {
    let mut c = Command::new(
        env.get("PGLEAP_TEST_DOCKER")
            .map_or("docker", String::as_str),
    );
    c.env("DOCKER_HOST", &env["DOCKER_HOST"])
        .env("DOCKER_BUILDKIT", "1");
    c
}

/// docker/test/package.Dockerfile on the engine tests' Debian image, tagged by what it is
/// built from so that a rerun builds nothing.
fn image(env: &BTreeMap<String, String>) -> String {
    let base = &env["PGLEAP_TEST_IMAGE_DEBIAN_SYSTEMD"];
    let dockerfile =
        std::fs::read_to_string(repo().join("docker/test/package.Dockerfile")).unwrap();
    let mut h = std::hash::DefaultHasher::new();
    std::hash::Hash::hash(&(base, &dockerfile), &mut h);
    let tag = format!("pgleap-test/package:{:016x}", std::hash::Hasher::finish(&h));
    let have = docker(env)
        .args(["image", "inspect", &tag])
        .output()
        .unwrap();
    if !have.status.success() {
        let ctx = tempfile::tempdir().unwrap();
        std::fs::write(ctx.path().join("Dockerfile"), dockerfile).unwrap();
        // apt needs the network for man-db and bash-completion; the test itself runs
        // without one.
        ok(
            &docker(env)
                .args(["build", "-q", "--network", "host", "--build-arg"])
                .arg(format!("BASE={base}"))
                .args(["-t", &tag])
                .arg(ctx.path())
                .output()
                .unwrap(),
            "docker build of the package test image",
        );
    }
    tag
}

#[test]
fn deb_installs_documents_completes_upgrades_and_removes_cleanly() {
    let Some(env) = engine() else {
        return;
    };
    let started = Instant::now();
    let deb = package();
    let built = started.elapsed();
    let image = image(&env);

    // The container sees only the package and the script, read-only.
    let pkg = tempfile::tempdir().unwrap();
    std::fs::copy(&deb, pkg.path().join("pgleap.deb")).unwrap();
    std::fs::copy(
        repo().join("docker/test/package.sh"),
        pkg.path().join("package.sh"),
    )
    .unwrap();
    let ran = Instant::now();
    let out = docker(&env)
        .args(["run", "--rm", "--network", "none", "-v"])
        .arg(format!("{}:/pkg:ro", pkg.path().display()))
        .args([image.as_str(), "bash", "/pkg/package.sh", "/pkg/pgleap.deb"])
        .output()
        .unwrap();
    let stdout = ok(&out, "docker/test/package.sh in the container");
    assert_eq!(
        stdout.lines().last(),
        Some("package test passed"),
        "the script ended early:\n{stdout}"
    );
    eprintln!(
        "package: {} built in {:.0?}, tested in a container in {:.0?}",
        deb.display(),
        built,
        ran.elapsed()
    );
}

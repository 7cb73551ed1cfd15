//! Records the git commit the binary was built from, for `--version` (and
//! the build-info metric). A build outside a git checkout (a source tarball,
//! a Docker context without .git) can pass it as `GATEKEEPER_COMMIT`.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_owned())
}

fn main() {
    println!("cargo:rerun-if-env-changed=GATEKEEPER_COMMIT");
    let commit = std::env::var("GATEKEEPER_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| {
            // Rerun when HEAD moves: HEAD itself, and the branch file it names
            // (a path that does not exist would make cargo rerun every build).
            let branch = git(&["symbolic-ref", "-q", "HEAD"]);
            for name in ["HEAD"].into_iter().chain(branch.as_deref()) {
                if let Some(path) = git(&["rev-parse", "--git-path", name])
                    && std::path::Path::new(&path).exists()
                {
                    println!("cargo:rerun-if-changed={path}");
                }
            }
            git(&["rev-parse", "--short=12", "HEAD"])
        })
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=GATEKEEPER_COMMIT={commit}");
}

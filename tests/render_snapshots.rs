//! Snapshots of every rendered file for the example inventories, and the poison-secret test:
//! a recognisable secret appears only in files that must hold it (marked sensitive, not
//! world-readable) and never in anything printed.

use std::path::{Path, PathBuf};

mod common;

/// Copy an example inventory into a temp dir with fixed secrets, so snapshots are stable and
/// nothing is written into the repository.
fn staged(inventory: &str, secret_value: impl Fn(&str) -> String) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join(inventory);
    let target = dir.path().join(source.file_name().expect("file name"));
    std::fs::copy(&source, &target).expect("copy inventory");
    let stem = target
        .file_stem()
        .expect("stem")
        .to_string_lossy()
        .into_owned();
    let secrets = common::cli::secrets_yaml(|name, _| secret_value(name));
    let store = target.with_file_name(format!("{stem}.secrets.yaml"));
    common::cli::write_secrets(&store, secrets);
    (dir, target)
}

#[test]
fn rendered_files_of_the_example_inventories() {
    for inventory in [
        "inventories/single-dc.yaml",
        "inventories/two-dc.yaml",
        "inventories/dedicated-etcd.yaml",
    ] {
        let (_dir, path) = staged(inventory, |name| format!("{name}-FIXED"));
        let project = pgstrap::project::load(&path, &[]).expect("valid inventory");
        let secrets = project.secrets(false).expect("secrets");
        let state = pgstrap::render::desired_state(&project, &secrets, None).expect("renders");
        let stem = Path::new(inventory)
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        for host in &state.hosts {
            let mut text = String::new();
            for role in &host.roles {
                text.push_str(&format!(
                    "##### role {} (cluster {}, phase {}) packages: {:?} services: {:?}\n",
                    role.role,
                    role.cluster.as_deref().unwrap_or("-"),
                    role.phase,
                    role.packages,
                    role.services
                        .iter()
                        .map(|s| format!("{}={:?}", s.name, s.state))
                        .collect::<Vec<_>>(),
                ));
                for file in &role.files {
                    text.push_str(&format!(
                        "===== {} {}:{} {:04o}{} notify={:?}\n{}",
                        file.path,
                        file.owner,
                        file.group,
                        file.mode,
                        if file.sensitive { " sensitive" } else { "" },
                        file.notify,
                        file.content
                    ));
                }
            }
            insta::assert_snapshot!(format!("{stem}__{}", host.host), text);
        }
    }
}

const POISON: &str = "P0ison-Secret";

#[test]
fn poison_secrets_only_appear_in_sensitive_files_and_never_in_output() {
    for inventory in ["inventories/two-dc.yaml", "inventories/single-dc.yaml"] {
        let (dir, path) = staged(inventory, |name| format!("{POISON}-{name}"));
        let out = dir.path().join("out");
        let mut printed = String::new();
        for args in [
            vec!["check", "-i"],
            vec!["render", "--out", out.to_str().unwrap(), "-i"],
            vec!["vars", "pg1", "-i"],
            vec!["-vv", "vars", "pg1", "--json", "-i"],
            vec!["templates", "list", "-i"],
        ] {
            let output = common::cli::command()
                .args(&args)
                .arg(&path)
                .output()
                .expect("run pgstrap");
            assert!(
                output.status.success(),
                "{args:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            printed.push_str(&String::from_utf8_lossy(&output.stdout));
            printed.push_str(&String::from_utf8_lossy(&output.stderr));
        }
        assert!(
            !printed.contains(POISON),
            "a secret was printed:\n{printed}"
        );

        // Files: the poison appears only in files marked sensitive, which are not world-readable.
        let project = pgstrap::project::load(&path, &[]).unwrap();
        let secrets = project.secrets(false).unwrap();
        let state = pgstrap::render::desired_state(&project, &secrets, None).unwrap();
        let mut holders = 0;
        for host in &state.hosts {
            for file in host.files() {
                if file.content.contains(POISON) {
                    holders += 1;
                    assert!(
                        file.sensitive,
                        "{} on {} holds a secret but is not marked sensitive",
                        file.path, host.host
                    );
                    assert_eq!(
                        file.mode & 0o007,
                        0,
                        "{} on {} is world-readable",
                        file.path,
                        host.host
                    );
                }
            }
            // The desired state's Debug output (used in logs) shows no content.
            assert!(!format!("{host:?}").contains(POISON));
        }
        assert!(
            holders > 0,
            "the poison should reach the files that need it"
        );
        // And the masker hides it in anything shown.
        assert_eq!(
            state
                .masker
                .mask(&format!("x {POISON}-superuser_password y")),
            "x *** y"
        );
    }
}

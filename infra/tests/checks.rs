//! `infra/check` (sam validate --lint, cfn-lint, checkov) passes on template.yaml and fails on templates broken
//! in the ways each tool is there to catch. The tools are installed by the script itself (virtualenvs).

use std::path::{Path, PathBuf};
use std::process::Command;

use dmap_infra::template::BUNDLED;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs `infra/check` on a template, every tool or only `only`'s (`CHECK_ONLY`): (passed, everything it printed).
fn check(template: &Path, only: Option<&str>) -> (bool, String) {
    let mut command = Command::new(repo().join("infra/check"));
    if let Some(only) = only {
        command.env("CHECK_ONLY", only);
    }
    let out = command.arg(template).output().expect("run infra/check");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The bundled template with these edits (each must apply exactly once).
fn broken(name: &str, edits: &[(&str, &str)]) -> PathBuf {
    let mut template = BUNDLED.to_owned();
    for (from, to) in edits {
        assert_eq!(template.matches(from).count(), 1, "{name}: {from:?}");
        template = template.replace(from, to);
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("broken-templates");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, template).unwrap();
    path
}

#[test]
fn the_checks_pass_on_the_template_and_bite_on_broken_ones() {
    // Two broken templates, each with every break one kind of tool is there to catch, and what the tool must
    // say of each break; each goes through those tools alone (`CHECK_ONLY`; "cloudformation": `sam validate
    // --lint` and cfn-lint). A tool reports every problem it finds, so each break is seen on its own line. The
    // tools take some seconds each: the three runs go at once.
    let cloudformation = broken(
        "cloudformation",
        &[
            // An unknown runtime.
            ("Runtime: provided.al2023", "Runtime: provided.al2099"),
            // A mapping's concurrency below the minimum.
            (
                "MaximumConcurrency: !Ref WorkerMaxConcurrency",
                "MaximumConcurrency: 1",
            ),
            // A redrive to a queue that does not exist.
            (
                "deadLetterTargetArn: !GetAtt WorkDeadLetterQueue.Arn",
                "deadLetterTargetArn: !GetAtt NoSuchQueue.Arn",
            ),
        ],
    );
    let checkov = broken(
        "checkov",
        &[
            // Public ACLs allowed on the bucket.
            ("BlockPublicAcls: true", "BlockPublicAcls: false"),
            // A justified suppression removed.
            (
                "    Metadata:\n      checkov:\n        skip:\n          - id: CKV_AWS_27\n            comment: Encrypted with SQS-managed SSE (SqsManagedSseEnabled); the check only looks at KmsMasterKeyId.\n    Properties:\n      QueueName: !Sub \"${AWS::StackName}-work\"\n",
                "    Properties:\n      QueueName: !Sub \"${AWS::StackName}-work\"\n",
            ),
        ],
    );
    let cases = [
        (
            "cloudformation",
            &cloudformation,
            &[
                "provided.al2099",
                "1 is less than the minimum of 2",
                "NoSuchQueue",
            ][..],
        ),
        ("checkov", &checkov, &["CKV_AWS_53", "CKV_AWS_27"][..]),
    ];
    std::thread::scope(|scope| {
        let template = repo().join("template.yaml");
        let whole = scope.spawn(move || check(&template, None));
        let runs: Vec<_> = cases
            .iter()
            .map(|(tools, path, says)| (tools, says, scope.spawn(|| check(path, Some(tools)))))
            .collect();
        let (passed, output) = whole.join().unwrap();
        assert!(passed, "template.yaml fails its checks:\n{output}");
        assert!(output.contains("Failed checks: 0"), "{output}");
        for (tools, says, run) in runs {
            let (passed, output) = run.join().unwrap();
            assert!(
                !passed,
                "{tools}: the checks pass on a broken template:\n{output}"
            );
            for said in *says {
                assert!(
                    output.contains(said),
                    "{tools}: expected {said:?} in:\n{output}"
                );
            }
        }
    });
}

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

/// The bundled template with one edit (which must apply exactly once).
fn broken(name: &str, from: &str, to: &str) -> PathBuf {
    assert_eq!(BUNDLED.matches(from).count(), 1, "{name}: {from:?}");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("broken-templates");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, BUNDLED.replace(from, to)).unwrap();
    path
}

#[test]
fn the_checks_pass_on_the_template_and_bite_on_broken_ones() {
    let (passed, output) = check(&repo().join("template.yaml"), None);
    assert!(passed, "template.yaml fails its checks:\n{output}");
    assert!(output.contains("Failed checks: 0"), "{output}");

    // (name, edit, what the failing tool must say, the tools there to catch it: `CHECK_ONLY`). Each broken
    // template goes through those tools alone ("cloudformation": `sam validate --lint` and cfn-lint, which both
    // catch the first three).
    let cases = [
        (
            "unknown-runtime",
            ("Runtime: provided.al2023", "Runtime: provided.al2099"),
            "provided.al2099",
            "cloudformation",
        ),
        (
            "concurrency-below-minimum",
            (
                "MaximumConcurrency: !Ref WorkerMaxConcurrency",
                "MaximumConcurrency: 1",
            ),
            "1 is less than the minimum of 2",
            "cloudformation",
        ),
        (
            "redrive-to-a-missing-queue",
            (
                "deadLetterTargetArn: !GetAtt WorkDeadLetterQueue.Arn",
                "deadLetterTargetArn: !GetAtt NoSuchQueue.Arn",
            ),
            "NoSuchQueue",
            "cloudformation",
        ),
        (
            "public-acls-allowed",
            ("BlockPublicAcls: true", "BlockPublicAcls: false"),
            "CKV_AWS_53",
            "checkov",
        ),
        (
            "suppression-removed",
            (
                "    Metadata:\n      checkov:\n        skip:\n          - id: CKV_AWS_27\n            comment: Encrypted with SQS-managed SSE (SqsManagedSseEnabled); the check only looks at KmsMasterKeyId.\n    Properties:\n      QueueName: !Sub \"${AWS::StackName}-work\"\n",
                "    Properties:\n      QueueName: !Sub \"${AWS::StackName}-work\"\n",
            ),
            "CKV_AWS_27",
            "checkov",
        ),
    ];
    let paths: Vec<(&str, PathBuf, &str, &str)> = cases
        .iter()
        .map(|(name, (from, to), says, tools)| (*name, broken(name, from, to), *says, *tools))
        .collect();
    std::thread::scope(|scope| {
        let runs: Vec<_> = paths
            .iter()
            .map(|(name, path, says, tools)| (name, says, scope.spawn(|| check(path, Some(tools)))))
            .collect();
        for (name, says, run) in runs {
            let (passed, output) = run.join().unwrap();
            assert!(
                !passed,
                "{name}: the checks pass on a broken template:\n{output}"
            );
            assert!(
                output.contains(says),
                "{name}: expected {says:?} in:\n{output}"
            );
        }
    });
}

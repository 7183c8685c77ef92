
/// `audit builds --help` documents its flags.
#[test]
fn audit_builds_help() {
    let env = Env::new();
    insta::assert_snapshot!(output(&env, env.cmd().args(["audit", "builds", "--help"])));
}

//! flowhq(1), rendered from the clap definitions in `args.rs` with clap_mangen and compared
//! with the committed `man/flowhq.1`, so the page cannot drift from the command line.
//! `FLOWHQ_BLESS=1 cargo test --bin flowhq man_page` rewrites the page.
//! The sections clap knows nothing about (exit status, environment, files) are the roff
//! text in `TAIL` below; the daemon's own page, flowhq-daemon(8), is written by hand.
//! Compiled for tests only: the binary does not carry its page.

use clap::CommandFactory;
use clap_mangen::Man;

use super::args::Cli;

const PAGE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/man/flowhq.1");
/// The page's date: the day the command line last changed. Change it with the page.
const DATE: &str = "2026-12-07";

const HEADER: &str = "\
.\\\" flowhq(1). Generated from the clap definitions in src/cli/args.rs by its man_page test:
.\\\" do not edit; change src/cli/args.rs, then run FLOWHQ_BLESS=1 cargo test --bin flowhq man_page.
";

const TAIL: &str = r#".SH EXIT STATUS
.TP
.B 0
Success.
.TP
.B 1
A runtime failure; the message names what failed.
.TP
.B 2
\fBflowhq plan\fR found actions to take.
.TP
.B 64
Bad command line (EX_USAGE).
.TP
.B 78
Configuration error (EX_CONFIG): the daemon configuration or a tenant file does not
validate, or a fleet command (\fBfleet\fR, \fBdrain\fR, \fBundrain\fR) found a SQLite
store: fleet mode needs PostgreSQL.
The packaged unit does not restart the daemon after it
(\fBRestartPreventExitStatus=78\fR), and the daemon holds a worker that exits with it until
the tenant's file changes.
.SH ENVIRONMENT
.TP
.B FLOWHQ_CONFIG
The daemon configuration file, for the commands whose \fB\-\-config\fR option names it.
Without either, \fBstatus\fR, \fBqr\fR, \fBlogs\fR, \fBlink\-url\fR, \fBrestart\fR,
\fBevents\fR, \fBplan\fR,
\fBmigrate\fR, \fBfleet\fR, \fBdrain\fR and \fBundrain\fR read \fI/etc/flowhq/flowhq.toml\fR when it exists (the Debian package's);
otherwise, and always for \fBdaemon\fR and \fBcheck\fR, the built\-in defaults apply (tenant
files in \fI./tenants.d\fR, state in \fI./.flowhq\fR).
.TP
\fBFLOWHQ_\fIKEY\fR, \fBFLOWHQ_\fISECTION\fB_\fIKEY\fR
Override one key of the configuration file, for example \fBFLOWHQ_STATUS_LISTEN\fR; see
\fBflowhq.toml\fR(5).
.TP
.B DATABASE_URL
The state store, when \fBFLOWHQ_DATABASE_URL\fR is not set.
.TP
.B RUST_LOG
The log filter (for example \fBinfo\fR or \fBflowhq=debug\fR).
.TP
\fBNOTIFY_SOCKET\fR, \fBWATCHDOG_USEC\fR
Set by systemd for the daemon; see \fBflowhq\-daemon\fR(8).
.SH FILES
.TP
.I /etc/flowhq/flowhq.toml
The daemon configuration, \fBflowhq.toml\fR(5).
.TP
.I /etc/flowhq/tenants.d/*.toml
Tenant files, \fBflowhq\-tenant\fR(5).
.TP
.I /var/lib/flowhq/
State: \fIflowhq.db\fR (the SQLite store), \fIsessions/\fR (one Chromium profile per tenant,
holding its WhatsApp login; mode 0700), \fIgit/\fR (the checkout of \fB[source.git]\fR).
.TP
.I /var/log/flowhq/
One log per worker, \fItenant\fR.log.
.TP
.I /run/flowhq/
Tenant locks and the pid records used to adopt running workers.
.TP
.I /usr/lib/systemd/system/flowhq.service
The systemd unit; see \fBflowhq\-daemon\fR(8).
.TP
.I /etc/nginx/sites\-available/flowhq
The Nginx site in front of the status endpoint (installed, not enabled).
.TP
.I /usr/share/doc/flowhq/examples/tenants.d/
Example tenant files.
.SH EXAMPLES
Operator commands on a packaged host run as the \fBflowhq\fR user and read the packaged
configuration by themselves:
.PP
.RS 4
.EX
flowhq check \-\-config /etc/flowhq/flowhq.toml
runuser \-u flowhq \-\- flowhq status
runuser \-u flowhq \-\- flowhq qr mama\-asha\-salon
runuser \-u flowhq \-\- flowhq link\-url mama\-asha\-salon \-\-base https://status.example.com
.EE
.RE
.PP
In a fleet, take node \fBb\fR out of service for maintenance and bring it back:
.PP
.RS 4
.EX
runuser \-u flowhq \-\- flowhq fleet
runuser \-u flowhq \-\- flowhq drain b \-\-wait \-\-timeout 15m
runuser \-u flowhq \-\- flowhq undrain b
.EE
.RE
.SH SEE ALSO
\fBflowhq\-daemon\fR(8), \fBflowhq.toml\fR(5), \fBflowhq\-tenant\fR(5),
\fBsystemd.service\fR(5), \fBnginx\fR(8)
"#;

/// One rendered section of `man`, without its `.SH` heading line.
fn body(render: impl Fn(&mut Vec<u8>) -> std::io::Result<()>) -> String {
    let mut out = Vec::new();
    render(&mut out).unwrap();
    String::from_utf8(out)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with(".SH "))
        .map(|l| format!("{l}\n"))
        .collect()
}

fn render() -> String {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let man = |cmd: clap::Command| {
        Man::new(cmd)
            .title("FLOWHQ")
            .section("1")
            .date(DATE)
            .source(format!("flowhq {}", env!("CARGO_PKG_VERSION")))
            .manual("User Commands")
    };
    let top = man(cmd.clone());
    let mut page = String::from(HEADER);
    let mut out = Vec::new();
    top.render_title(&mut out).unwrap();
    top.render_name_section(&mut out).unwrap();
    top.render_synopsis_section(&mut out).unwrap();
    top.render_description_section(&mut out).unwrap();
    top.render_options_section(&mut out).unwrap();
    page.push_str(&String::from_utf8(out).unwrap());
    page.push_str(".SH COMMANDS\n");
    // Subcommands of subcommands (`fleet remove`) follow their parent.
    let subs = cmd.get_subcommands().flat_map(|s| {
        std::iter::once(s).chain(s.get_subcommands().filter(|s| s.get_name() != "help"))
    });
    for sub in subs.filter(|s| !s.is_hide_set()) {
        let name = sub.get_bin_name().unwrap_or_else(|| sub.get_name());
        let sub = man(sub.clone());
        page.push_str(&format!(".SS \"{name}\"\n"));
        page.push_str(&body(|w| sub.render_synopsis_section(w)));
        page.push_str(".PP\n");
        page.push_str(&body(|w| sub.render_description_section(w)));
        page.push_str(&body(|w| sub.render_options_section(w)));
    }
    page.push_str(TAIL);
    // clap_mangen separates an option's help from its possible values with `.br`, an
    // empty line and `.br`, which mandoc flags; one `.sp` is the same vertical space.
    page.replace("\n.br\n\n.br\n", "\n.sp\n")
}

#[test]
fn the_committed_man_page_matches_the_command_line() {
    let rendered = render();
    if std::env::var("FLOWHQ_BLESS").is_ok_and(|v| v == "1") {
        std::fs::write(PAGE, &rendered).unwrap();
    }
    let committed = std::fs::read_to_string(PAGE).unwrap_or_default();
    assert!(
        committed == rendered,
        "man/flowhq.1 differs from the command line in src/cli/args.rs; regenerate it with \
         FLOWHQ_BLESS=1 cargo test --bin flowhq man_page"
    );
}

#[test]
fn the_man_page_documents_every_subcommand() {
    let page = render();
    for sub in Cli::command().get_subcommands() {
        let heading = format!(".SS \"flowhq {}\"\n", sub.get_name());
        assert!(page.contains(&heading), "no section {heading}");
    }
}

//! The `iwf` command: `check`, `map` (dry run), and the server commands.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use iwf::clock::{Clock, SystemClock};
use iwf::ids::{Ids, RandomIds, SequentialIds};
use iwf::mail_to_cpm::dryrun::{self, Options};
use iwf::ruleset::{self, diag};
use iwf::smtp::envelope::{Client, MailFrom, Rcpt};

#[derive(Parser)]
#[command(name = "iwf", version, about = "E-mail <-> CPM interworking function")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load and compile a rule set and run its self-tests; exit 0 only when clean.
    Check {
        /// Rule-set directory (also accepted as a positional argument).
        #[arg(long = "rules", value_name = "DIR")]
        rules_flag: Option<PathBuf>,
        #[arg(value_name = "DIR")]
        rules: Option<PathBuf>,
    },
    /// Dry run: print the SIP request(s) a mail would become, or the SMTP rejections.
    Map(MapArgs),
    /// Run the gateway: ESMTP (and LMTP) in, SIP out.
    Serve(ServeArgs),
    /// Run the gateway with an in-process SIP endpoint that answers 200 and prints every
    /// request it receives: a mail sent to 127.0.0.1:2525 shows up as a SIP MESSAGE.
    Demo(ServeArgs),
    /// Look inside the delivery/correlation store the configuration names.
    Store {
        #[command(subcommand)]
        action: StoreAction,
        /// YAML configuration file (its `store` and `state_dir`).
        #[arg(long, value_name = "FILE", global = true)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum StoreAction {
    /// Backend, location, live record counts and limits.
    Stats,
    /// The recipients recorded for a mail identity (`id:<Message-ID>` or `sha256:<hex>`)
    /// and the correlation record with that key, as JSON.
    Get { key: String },
}

#[derive(clap::Args, Clone)]
struct ServeArgs {
    /// YAML configuration file (see README).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[arg(long, value_name = "DIR")]
    rules: Option<PathBuf>,
    /// ESMTP listener, default 127.0.0.1:2525.
    #[arg(long, value_name = "ADDR")]
    smtp_listen: Option<String>,
    /// LMTP listener (off by default).
    #[arg(long, value_name = "ADDR")]
    lmtp_listen: Option<String>,
    /// Local SIP address, default 127.0.0.1:0.
    #[arg(long, value_name = "ADDR")]
    sip_listen: Option<String>,
    /// Outbound proxy, e.g. sip:127.0.0.1:5060;transport=udp (else RFC 3263 resolution).
    #[arg(long, value_name = "URI")]
    next_hop: Option<String>,
    /// Serve Prometheus metrics over HTTP at ADDR (GET /metrics), e.g. 127.0.0.1:9090.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<String>,
    /// Log lines as human-readable text (default) or JSON objects.
    #[arg(long, value_name = "FORMAT", value_parser = ["text", "json"])]
    log_format: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Sip,
    Json,
}

fn main() -> ExitCode {
    big_buffers_mapped();
    let cli = Cli::parse();
    match cli.command {
        Command::Check { rules_flag, rules } => {
            check(rules_flag.or(rules).unwrap_or_else(|| "rules".into()))
        }
        Command::Map(args) => map(args),
        Command::Serve(a) => serve(a, false),
        Command::Demo(a) => serve(a, true),
        Command::Store { action, config } => store(action, config),
    }
}

/// Blocks of a megabyte or more (a big mail's DATA buffer as it grows, a decoded copy)
/// get their own mapping from glibc's malloc, given back to the kernel when freed and grown
/// by `mremap` without a copy. Left alone, glibc raises that threshold to the largest block
/// freed so far (up to 32 MB): after the first big mail the next ones are carved from the
/// worker threads' arenas and stay resident once freed, one mail's worth per arena, so a
/// process that has delivered a few 10 MB mails peaks at ~3.9x a mail's size instead of
/// ~2.9x (bench/results/large-rss-2026-12-01.md). Setting it also stops the raising. An
/// operator's own `MALLOC_MMAP_THRESHOLD_` is left to glibc.
fn big_buffers_mapped() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
        unsafe extern "C" {
            fn mallopt(param: i32, value: i32) -> i32;
        }
        const M_MMAP_THRESHOLD: i32 = -3;
        // SAFETY: called first in `main`, before any other thread exists; it only sets a
        // malloc parameter.
        unsafe {
            mallopt(M_MMAP_THRESHOLD, 1 << 20);
        }
    }
}

fn store(action: StoreAction, config: Option<PathBuf>) -> ExitCode {
    let cfg = match iwf::ops::config::Config::load(config.as_deref(), &Default::default()) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let iwf::store::Backend::Sqlite(path) = &cfg.store
        && !path.exists()
    {
        eprintln!(
            "error: no store at {} (nothing recorded yet, or another state_dir)",
            path.display()
        );
        return ExitCode::FAILURE;
    }
    let run = async {
        let s = cfg.store.open(cfg.store_limits, iwf::clock::system())?;
        match action {
            StoreAction::Stats => {
                let st = s.stats().await?;
                println!("backend: {}", st.backend);
                println!("location: {}", st.location);
                println!("delivery_records: {}", st.delivery_records);
                println!("correlation_records: {}", st.correlation_records);
                println!("max_records: {}", st.max_records);
                println!("delivery_ttl_secs: {}", st.delivery_ttl_secs);
            }
            StoreAction::Get { key } => {
                let l = s.lookup(&key).await?;
                println!("{}", serde_json::to_string_pretty(&l)?);
                if l.delivered.is_empty() && l.correlation.is_none() {
                    anyhow::bail!("nothing recorded under `{key}`");
                }
            }
        }
        anyhow::Ok(())
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(a: ServeArgs, demo: bool) -> ExitCode {
    let overrides = iwf::ops::config::Overrides {
        rules: a.rules,
        smtp_listen: a.smtp_listen,
        lmtp_listen: a.lmtp_listen,
        sip_listen: a.sip_listen,
        next_hop: a.next_hop,
        metrics_listen: a.metrics_listen,
        log_format: a.log_format,
    };
    let cfg = match iwf::ops::config::Config::load(a.config.as_deref(), &overrides) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    iwf::ops::logging::init(cfg.log_format);
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async { anyhow::Ok(iwf::ops::server::serve(cfg, demo).await?) });
    // Whatever is still running (a reload in progress, idle tasks) may not hold up exit.
    rt.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn check(dir: PathBuf) -> ExitCode {
    match ruleset::load(&dir, 1) {
        Err(diags) => {
            eprint!("{}", diag::render_all(&diags));
            ExitCode::FAILURE
        }
        Ok(rules) => {
            let failures = iwf::ruleset::selftest::run_all(&rules);
            for f in &failures {
                eprintln!("error: {f}");
            }
            if failures.is_empty() {
                println!(
                    "{}: {} rules in {} phases, {} self-tests passed",
                    dir.display(),
                    rules.rule_count(),
                    rules.phases.iter().filter(|p| !p.is_empty()).count(),
                    rules.tests.len()
                );
                ExitCode::SUCCESS
            } else {
                eprintln!("{} self-test failure(s)", failures.len());
                ExitCode::FAILURE
            }
        }
    }
}

#[derive(clap::Args)]
struct MapArgs {
    #[arg(long, value_name = "DIR", default_value = "rules")]
    rules: PathBuf,
    #[arg(long, value_enum, default_value_t = Format::Sip)]
    format: Format,
    /// Show each rule that fired, with its file:line and the value it produced.
    #[arg(long)]
    explain: bool,
    /// What follows `MAIL FROM:`, e.g. '<a@mail.example.org> BY=3600;R'.
    #[arg(long, value_name = "ARGS")]
    mail_from: Option<String>,
    /// What follows `RCPT TO:` (repeatable), e.g. '<+15551230001@cpm.example.net> NOTIFY=SUCCESS'.
    #[arg(long = "rcpt", value_name = "ARGS")]
    rcpts: Vec<String>,
    /// The client authenticated (SMTP AUTH), for the P-Asserted-Identity rule.
    #[arg(long)]
    authenticated: bool,
    /// Reproducible identifiers and clock (as in snapshots and self-tests).
    #[arg(long)]
    deterministic: bool,
    /// MSRP chunk size for large mode.
    #[arg(long, default_value_t = 2048)]
    chunk_size: usize,
    /// CPM -> e-mail: a SIP request in wire format (FILE, or - for standard input) instead
    /// of a mail; prints the envelope and the mail for the smarthost, or the SIP response.
    #[arg(long, value_name = "FILE", conflicts_with = "file")]
    sip: Option<PathBuf>,
    /// With --sip: the smarthost offers SMTPUTF8 (UTF-8 headers are then not RFC 2047-encoded).
    #[arg(long, requires = "sip")]
    smtputf8: bool,
    /// A report's correlation record (JSON: the record's fields, or what `iwf store get KEY`
    /// prints): an IMDN given with --sip, or a DSN/MDN mail for a b+<token> address, is
    /// mapped as if the store held it.
    #[arg(long, value_name = "FILE")]
    record: Option<PathBuf>,
    /// The mail (RFC 5322), or - for standard input.
    #[arg(value_name = "FILE", required_unless_present = "sip")]
    file: Option<PathBuf>,
}

fn map(a: MapArgs) -> ExitCode {
    let rules = match ruleset::load(&a.rules, 1) {
        Ok(r) => r,
        Err(diags) => {
            eprint!("{}", diag::render_all(&diags));
            return ExitCode::FAILURE;
        }
    };
    let Some(file) = a.sip.as_ref().or(a.file.as_ref()) else {
        return ExitCode::FAILURE;
    };
    let mut raw = Vec::new();
    let read = if file.as_os_str() == "-" {
        std::io::stdin().read_to_end(&mut raw).map(|_| ())
    } else {
        std::fs::read(file).map(|d| raw = d)
    };
    if let Err(e) = read {
        eprintln!("error: cannot read {}: {e}", file.display());
        return ExitCode::FAILURE;
    }
    let record = match &a.record {
        None => None,
        Some(p) => match std::fs::read_to_string(p)
            .map_err(|e| e.to_string())
            .and_then(|t| iwf::reports::dryrun::read_record(&t).map_err(|e| e.to_string()))
        {
            Ok(r) => Some(r),
            Err(e) => {
                eprintln!("error: --record {}: {e}", p.display());
                return ExitCode::FAILURE;
            }
        },
    };
    if a.sip.is_some() {
        return map_sip(&rules, &raw, &a, record.as_ref());
    }
    let raw = iwf::mail_to_cpm::mail::crlf_line_ends(raw);
    let mail_from = match a.mail_from.as_deref().map(MailFrom::parse).transpose() {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: --mail-from: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut rcpts = Vec::new();
    for r in &a.rcpts {
        match Rcpt::parse(r) {
            Ok(r) => rcpts.push(r),
            Err(e) => {
                eprintln!("error: --rcpt: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let seq = SequentialIds::new();
    let ids: &dyn iwf::ids::Ids = if a.deterministic { &seq } else { &RandomIds };
    let now = if a.deterministic {
        iwf::ids::fixed_now()
    } else {
        SystemClock.now()
    };
    let run = dryrun::run(
        &rules,
        &raw,
        &Options {
            mail_from,
            rcpts,
            client: Client {
                authenticated: a.authenticated,
                helo: "localhost".into(),
                ..Client::default()
            },
            now,
            elapsed: 0,
            ids,
            explain: a.explain,
            chunk_size: a.chunk_size.max(1),
        },
    );
    // DSN/MDN mails for iwf's own b+<token> addresses: the IMDN each would become.
    let reports: Vec<(String, iwf::reports::dryrun::ReportDryRun)> = run
        .reports
        .iter()
        .map(|r| {
            (
                r.recipient.clone(),
                iwf::reports::dryrun::mail_report(
                    &rules,
                    &raw,
                    &r.recipient,
                    &r.token,
                    record.as_ref(),
                    ids,
                    now,
                    a.explain,
                ),
            )
        })
        .collect();
    match a.format {
        Format::Json => {
            // Without report addresses the output is the mail's dry run as before.
            let json = if reports.is_empty() {
                serde_json::to_string_pretty(&run)
            } else {
                serde_json::to_string_pretty(
                    &serde_json::json!({ "mail": &run, "reports": &reports }),
                )
            };
            match json {
                Ok(s) => println!("{s}"),
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        Format::Sip => {
            print!("{}", render_text(&run));
            for (rcpt, r) in &reports {
                print!("{}", render_report(&format!("report for {rcpt}"), r));
            }
        }
    }
    ExitCode::SUCCESS
}

/// A report dry run: what would be sent, then the answer.
fn render_report(title: &str, r: &iwf::reports::dryrun::ReportDryRun) -> String {
    let mut out = format!("=== {title} ===\n");
    for s in &r.sent {
        out.push_str("--- sent ---\n");
        out.push_str(s);
        if !s.ends_with('\n') {
            out.push_str("\r\n");
        }
    }
    out.push_str("--- answer ---\n");
    out.push_str(&r.answer);
    if !r.explain.is_empty() {
        out.push_str("--- rules that fired ---\n");
        for f in &r.explain {
            out.push_str(&format!("{:<12} {:<40} {}\n", f.phase, f.rule, f.at));
            for (k, v) in &f.values {
                out.push_str(&format!("{:<12}   {k} = {v}\n", ""));
            }
        }
    }
    out.push('\n');
    out
}

/// `iwf map --sip`: the CPM -> e-mail dry run, for a smarthost offering 8BITMIME, DSN and
/// DELIVERBY (and SMTPUTF8 with --smtputf8) that answers DATA with 250.
fn map_sip(
    rules: &ruleset::RuleSet,
    raw: &[u8],
    a: &MapArgs,
    record: Option<&iwf::store::Fields>,
) -> ExitCode {
    let caps = iwf::smtp_client::Caps {
        eightbitmime: true,
        dsn: true,
        deliverby: true,
        smtputf8: a.smtputf8,
        ..Default::default()
    };
    let (token, now) = if a.deterministic {
        (SequentialIds::new().token(), iwf::ids::fixed_now())
    } else {
        (RandomIds.token(), SystemClock.now())
    };
    let run = iwf::cpm_to_mail::uas::dry_run_with_record(
        rules, raw, &caps, token, now, a.explain, record,
    );
    match a.format {
        Format::Json => match serde_json::to_string_pretty(&run) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        },
        Format::Sip => print!("{}", render_sip_run(&run)),
    }
    ExitCode::SUCCESS
}

fn render_sip_run(run: &iwf::cpm_to_mail::uas::DryRun) -> String {
    if let Some(r) = &run.report {
        return render_report("IMDN (a report about a message iwf sent)", r);
    }
    let mut out = String::new();
    if let (Some(env), Some(mail)) = (&run.envelope, &run.mail) {
        out.push_str("=== envelope ===\n");
        for l in env {
            out.push_str(l);
            out.push('\n');
        }
        out.push_str("=== mail ===\n");
        out.push_str(mail);
        out.push_str("=== SIP response after the smarthost's 250 ===\n");
    } else {
        out.push_str("=== SIP response ===\n");
    }
    out.push_str(&run.response);
    out.push('\n');
    if !run.explain.is_empty() {
        out.push_str("=== rules that fired ===\n");
        for f in &run.explain {
            out.push_str(&format!("{:<12} {:<30} {}\n", f.phase, f.rule, f.at));
            for (k, v) in &f.values {
                out.push_str(&format!("{:<12}   {k} = {v}\n", ""));
            }
        }
    }
    out
}

fn render_text(run: &dryrun::DryRun) -> String {
    let mut out = String::new();
    for d in &run.deliveries {
        out.push_str(&format!(
            "=== {} ({} mode) ===\n",
            d.recipient,
            d.mode.as_str()
        ));
        if !d.covers.is_empty() {
            out.push_str(&format!("(also covers: {})\n", d.covers.join(", ")));
        }
        out.push_str(&d.request);
        if !d.request.ends_with('\n') {
            out.push_str("\r\n");
        }
        for chunk in &d.msrp {
            out.push_str("--- MSRP ---\n");
            out.push_str(chunk);
        }
        out.push('\n');
    }
    for r in &run.rejections {
        out.push_str(&format!(
            "=== {} rejected ===\n{}\n\n",
            r.recipient, r.reply
        ));
    }
    for r in &run.relayed {
        out.push_str(&format!(
            "=== {} relayed as mail ===\nto <{}> through the smarthost, unchanged\n\n",
            r.recipient, r.mailbox
        ));
    }
    if !run.explain.is_empty() {
        out.push_str("=== rules that fired ===\n");
        for f in &run.explain {
            out.push_str(&format!("{:<11} {:<34} {}\n", f.phase, f.rule, f.at));
            for (k, v) in &f.values {
                out.push_str(&format!("{:<11}   {k} = {v}\n", ""));
            }
        }
    }
    out
}

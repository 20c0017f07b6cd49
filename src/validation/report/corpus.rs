//! `validate --corpus`'s table: one line per source, llama.cpp's `--kl-divergence` statistics
//! against the truth, then the gate.

use std::fmt::Write;

use super::sci;
use crate::validation::corpus::CorpusReport;

pub fn corpus_table(report: &CorpusReport) -> String {
    let mut out = String::new();
    let c = &report.corpus;
    let _ = writeln!(out, "llorch validate --corpus: {}", report.model);
    let _ = writeln!(
        out,
        "corpus: {} ({} tokens, {} windows of {}, {} positions); truth: {} (perplexity {:.3})",
        report.file,
        c.tokens,
        c.windows,
        c.window,
        c.windows * c.window,
        report.truth,
        report.truth_perplexity
    );
    let _ = writeln!(
        out,
        "KLD(truth || source) of every position's next-token distribution; top-1: the truth's top token, a \
         near tie counted as agreement{}",
        match &report.peer {
            Some(peer) => format!(" (within twice checkpoint 9's allowance from {peer}'s logit error there)"),
            None => " (no float32 peer: no near ties)".into(),
        }
    );
    let _ = writeln!(
        out,
        "\n{:<24} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7} {:>9} {:>10}",
        "source",
        "weights",
        "precision",
        "KLD mean",
        "median",
        "p99",
        "p99.9",
        "max",
        "top-1",
        "|dp| top",
        "perplexity"
    );
    for s in &report.sources {
        let top1 = format!("{:.2}%", 100.0 * s.top1_rate());
        let _ = writeln!(
            out,
            "{:<24} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7} {:>9} {:>10.3}",
            s.name,
            s.weights.to_string(),
            s.precision.name(),
            sci(s.kld.mean),
            sci(s.kld.median),
            sci(s.kld.p99),
            sci(s.kld.p999),
            sci(s.kld.max),
            top1,
            sci(s.mean_abs_dp_top),
            s.perplexity
        );
        if s.top1_ties > 0 {
            let _ = writeln!(out, "{:<24} {} of the top-1 agreements are near ties", "", s.top1_ties);
        }
    }
    match &report.gate {
        Some(g) if g.passed => {
            let _ = writeln!(
                out,
                "\nPASS: ours's mean KLD {} is within --max-kld {}",
                sci(g.ours_mean_kld),
                sci(g.max_kld)
            );
        }
        Some(g) => {
            let _ = writeln!(
                out,
                "\nFAIL: ours's mean KLD {} exceeds --max-kld {}",
                sci(g.ours_mean_kld),
                sci(g.max_kld)
            );
        }
        None => {
            let _ = writeln!(out, "\nno gate (--max-kld X fails the run when ours's mean KLD exceeds X)");
        }
    }
    out
}

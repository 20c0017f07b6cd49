//! `llorch checkpoints`: the checkpoint table of `validation::spec`, for people and as JSON
//! (which the Python scripts read their tolerances from).

use comfy_table::{ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};

use crate::validation::spec::{Kind, specs};

pub fn checkpoints_table() -> String {
    let mut table = Table::new();
    table.load_style(UTF8_FULL_CONDENSED).set_content_arrangement(ContentArrangement::Disabled);
    table.force_no_tty();
    table.set_header(["cp", "name", "per layer", "tensors", "tolerance", "accuracy vs float64"]);
    for spec in specs() {
        let tensors: Vec<String> = spec
            .tensors
            .iter()
            .map(|t| match t.kind {
                Kind::Float { .. } => match t.tolerance {
                    Some(own) => format!("{} {} ({own})", t.name, t.shape),
                    None => format!("{} {}", t.name, t.shape),
                },
                Kind::Tokens => format!("{} (token ids)", t.name),
                Kind::Text => format!("{} (text)", t.name),
            })
            .collect();
        let accuracy = match spec.accuracy {
            Some(rule) => {
                format!(
                    "max {}×, rms {}× peer + {:.0e} + {}ε·|truth|; bias {}ε",
                    rule.k, rule.k_rms, rule.floor, rule.floor_eps, rule.bias_eps
                )
            }
            None => "-".into(),
        };
        table.add_row(vec![
            spec.id.index().to_string(),
            spec.id.title().to_string(),
            if spec.id.per_layer() { "yes" } else { "no" }.to_string(),
            tensors.join(", "),
            spec.tolerance.to_string(),
            accuracy,
        ]);
    }
    format!(
        "{table}\nAccuracy, with a float64 dump as the truth and a float32 one as the peer:\n  \
         max |ours − truth| ≤ k·max |peer − truth| + floor + floor_eps·ε·max |truth|, and\n  \
         rms(ours − truth) ≤ k_rms·rms(peer − truth) + floor + floor_eps·ε·rms(truth), ε = 2^-23;\n  \
         isolated, the bias of ours − peer over bins of the truth's value ≤ bias_eps·ε·rms(truth)\n  \
         unless noise explains it (χ² under its 1e-9 point).\n\
         Definitions, masks, invariants and the HF source of each reference: \
         CHECKPOINTS.md; as JSON: llorch checkpoints --format json\n"
    )
}

pub fn checkpoints_json() -> String {
    #[derive(serde::Serialize)]
    struct Doc {
        checkpoints: &'static [crate::validation::spec::Spec],
    }
    serde_json::to_string_pretty(&Doc { checkpoints: specs() }).expect("the table serialises") + "\n"
}

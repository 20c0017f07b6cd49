//! `llorch validate` on the bundled fixture, through the real binary: a clean run passes, and a
//! reference perturbed at any checkpoint fails with exit 1 naming that checkpoint and layer.

use crate::common::{RefCopy, coverage_fixture, fixture, run};

#[test]
fn default_run_validates_every_checkpoint_against_both_references_and_passes() {
    let out = run(&["validate"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("PASS") && !out.stdout.contains("FAIL"), "{}", out.stdout);
    // The three-way comparison: ours, PyTorch float32 and the float64 truth, side by side.
    for pair in ["ours vs pytorch-f32", "ours vs pytorch-f64", "pytorch-f32 vs pytorch-f64"] {
        assert!(out.stdout.contains(pair), "no {pair:?} rows:\n{}", out.stdout);
    }
    assert!(out.stdout.contains("accuracy against pytorch-f64: worst ours/pytorch-f32 error ratio"));
    for case in ["hello", "long", "unicode", "sampled"] {
        assert!(out.stdout.contains(&format!("case {case}\n")), "case {case} missing");
    }
    let last = out.stdout.lines().last().unwrap();
    assert!(last.starts_with("llorch: ") && last.ends_with(" passed, 0 failed"), "{last}");
    // Every checkpoint 0..=12 produced at least one row.
    for cp in 0..=12 {
        assert!(out.stdout.contains(&format!("│ {cp} ")), "no row for checkpoint {cp}");
    }
}

#[test]
fn every_layer_passes_for_the_early_checkpoints() {
    let out = run(&["validate", "--checkpoint", "1", "--layer", "all", "--case", "hello"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    // ln_1 at layer 0 and layer 1 of the prompt's pass and of the decode steps the dumps hold
    // (1, 2, 8 and 10), nothing else; three pairs each.
    assert_eq!(out.stdout.matches(" ln_1 ").count(), 10, "{}", out.stdout);
    assert_eq!(out.stdout.matches("┆ ours vs pytorch-f64").count(), 10, "{}", out.stdout);
    assert!(out.stdout.ends_with("llorch: 30 passed, 0 failed\n"), "{}", out.stdout);
}

#[test]
fn explicit_model_and_reference_flags_work() {
    let model = fixture();
    let reference = model.join("reference");
    let out = run(&[
        "validate",
        "--model",
        model.to_str().unwrap(),
        "--reference",
        reference.to_str().unwrap(),
        "--checkpoint",
        "2",
        "--case",
        "long",
    ]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("[4, 27, 16]"), "q/k/v of 27 tokens: {}", out.stdout);
}

/// Perturbs one reference value by 1.0, far outside every tolerance, and expects exit 1 with the
/// failure located at exactly that checkpoint and layer.
fn assert_perturbation_caught(cp: u64, layer: Option<u64>, name: &str, title: &str) {
    assert_caught_in("prefill", cp, layer, name, title);
}

/// The same on the decode step: the failure is located in the decode step's tables.
fn assert_decode_perturbation_caught(cp: u64, layer: Option<u64>, name: &str, title: &str) {
    assert_caught_in("decode", cp, layer, name, title);
}

fn assert_caught_in(phase: &str, cp: u64, layer: Option<u64>, name: &str, title: &str) {
    let refs = RefCopy::new();
    // On the decode step the last element: in the cache, that is the row the step wrote.
    refs.edit_tensor_in(phase, "hello", cp, layer, name, |a| {
        let element = if phase == "decode" { a.iter_mut().last() } else { a.iter_mut().next() };
        *element.unwrap() += 1.0;
    });
    let cp_arg = cp.to_string();
    let out = refs.validate_hello(&["--checkpoint", &cp_arg, "--layer", "all"]);
    assert_eq!(out.code, 1, "perturbed {phase} {name} at checkpoint {cp}: {}{}", out.stdout, out.stderr);
    let at = layer.map(|l| format!(", layer {l}")).unwrap_or_default();
    let step = if phase == "decode" { "decode step, " } else { "" };
    let expected = format!("first failure: case hello, {step}checkpoint {cp} ({title}){at}, {name}");
    assert!(out.stdout.contains(&expected), "wanted {expected:?} in:\n{}", out.stdout);
    assert!(out.stdout.contains("FAIL"));
    if phase == "decode" {
        assert!(
            out.stdout.contains("case hello, decode step (the token after the prompt)\n"),
            "{}",
            out.stdout
        );
    } else {
        assert!(out.stdout.contains("1 of "), "one element out of tolerance: {}", out.stdout);
    }
}

#[test]
fn perturbed_embeddings_fail_checkpoint_0() {
    assert_perturbation_caught(0, None, "embeddings", "embeddings");
}

#[test]
fn perturbed_layer_norm_fails_checkpoint_1() {
    assert_perturbation_caught(1, Some(1), "ln_1", "layer norm");
}

#[test]
fn perturbed_keys_fail_checkpoint_2() {
    assert_perturbation_caught(2, Some(1), "k", "Q/K/V");
}

#[test]
fn perturbed_kv_cache_fails_checkpoint_3() {
    // The decode step's cache: the prompt's shares its files with checkpoint 2's k and v.
    assert_decode_perturbation_caught(3, Some(1), "v_cache", "KV cache");
}

#[test]
fn perturbed_decode_step_tensors_fail_at_their_checkpoint_of_the_decode_step() {
    assert_decode_perturbation_caught(0, None, "embeddings", "embeddings");
    assert_decode_perturbation_caught(4, Some(0), "scores", "attention scores");
    assert_decode_perturbation_caught(6, Some(1), "mlp_out", "FFN");
    assert_decode_perturbation_caught(8, None, "logits", "full logits");
}

#[test]
fn the_phase_flag_selects_the_pass() {
    let prefill = run(&["validate", "--case", "hello", "--checkpoint", "0", "--phase", "prefill"]);
    let decode = run(&["validate", "--case", "hello", "--checkpoint", "0", "--phase", "decode"]);
    assert_eq!((prefill.code, decode.code), (0, 0), "{}{}", prefill.stderr, decode.stderr);
    assert!(
        !prefill.stdout.contains("decode step") && prefill.stdout.contains("[2, 64]"),
        "{}",
        prefill.stdout
    );
    assert!(decode.stdout.contains("decode step") && decode.stdout.contains("[1, 64]"), "{}", decode.stdout);
    let nothing = run(&["validate", "--checkpoint", "12", "--phase", "decode"]);
    assert_eq!(nothing.code, 2);
    assert!(
        nothing.stderr.contains("nothing to check: the decode step has checkpoints 0 to 9 only"),
        "{}",
        nothing.stderr
    );
}

#[test]
fn perturbed_attention_scores_fail_checkpoint_4() {
    // Element [0, 0, 0] is query 0 against key 0: a causal entry, so it is compared.
    assert_perturbation_caught(4, Some(1), "scores", "attention scores");
}

#[test]
fn perturbed_attention_output_fails_checkpoint_5() {
    assert_perturbation_caught(5, Some(1), "attn_out", "attention output");
}

#[test]
fn perturbed_gelu_fails_checkpoint_6() {
    assert_perturbation_caught(6, Some(0), "gelu", "FFN");
}

#[test]
fn perturbed_ln_2_fails_checkpoint_6_before_the_gelu() {
    assert_perturbation_caught(6, Some(1), "ln_2", "FFN");
}

#[test]
fn perturbed_ln_f_fails_checkpoint_8_before_the_logits() {
    assert_perturbation_caught(8, None, "ln_f", "full logits");
}

#[test]
fn perturbed_block_output_fails_checkpoint_7() {
    assert_perturbation_caught(7, Some(1), "block_out", "block output");
}

#[test]
fn perturbed_logits_fail_checkpoint_8() {
    assert_perturbation_caught(8, None, "logits", "full logits");
}

#[test]
fn perturbed_selected_logits_fail_checkpoint_9() {
    assert_perturbation_caught(9, None, "selected_logits", "selected logits");
}

#[test]
fn perturbed_probabilities_fail_checkpoint_11() {
    assert_perturbation_caught(11, None, "probs", "softmax probabilities");
}

#[test]
fn a_masked_future_score_is_compared_only_as_masked() {
    // [head 0, query 0, key 1] is in the future of query 0: HF holds the float minimum there,
    // we hold −∞. Which masked value it is does not matter ...
    let refs = RefCopy::new();
    refs.edit_tensor("hello", 4, Some(0), "scores", |a| a[[0, 0, 1]] = -1e35);
    let out = refs.validate_hello(&["--checkpoint", "4"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("masked future entries excluded from the diff"));
    // ... but a value there means that side saw the future key: a mismatch.
    refs.edit_tensor("hello", 4, Some(0), "scores", |a| a[[0, 0, 1]] = 0.5);
    let out = refs.validate_hello(&["--checkpoint", "4"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("1 future key left unmasked by one side"), "{}", out.stdout);
}

#[test]
fn a_different_hf_argmax_fails_checkpoint_10() {
    let refs = RefCopy::new();
    let mut m = refs.manifest();
    let hf = m["cases"][0]["next_token"].as_u64().unwrap();
    m["cases"][0]["next_token"] = (hf + 1).into();
    refs.set_manifest(&m);
    let out = refs.validate_hello(&["--checkpoint", "10"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("first failure: case hello, checkpoint 10 (argmax)"), "{}", out.stdout);
    assert!(out.stdout.contains(&format!("ours {hf} (logit")), "{}", out.stdout);
}

#[test]
fn a_different_hf_generation_names_the_first_differing_token() {
    let refs = RefCopy::new();
    let mut m = refs.manifest();
    let ids = m["cases"][0]["generated_ids"].as_array().unwrap().clone();
    let ours3 = ids[3].as_u64().unwrap();
    m["cases"][0]["generated_ids"][3] = (ours3 + 1).into();
    refs.set_manifest(&m);
    let out = refs.validate_hello(&["--checkpoint", "12"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let expected = format!("first difference at new token 3: ours {ours3}, pytorch-f32 {}", ours3 + 1);
    assert!(out.stdout.contains(&expected), "{}", out.stdout);
    assert!(out.stdout.contains("our logit gap"), "{}", out.stdout);
}

#[test]
fn a_tighter_tolerance_flag_turns_float_noise_into_failures() {
    // Our logits differ from HF's by float32 rounding (about 1e-6), never by exactly zero.
    let out = run(&["validate", "--case", "hello", "--checkpoint", "8", "--atol", "0", "--rtol", "0"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("atol 0e0"), "{}", out.stdout);
}

#[test]
fn json_output_parses_and_matches_the_verdicts() {
    let out = run(&[
        "validate",
        "--case",
        "hello",
        "--checkpoint",
        "0-2",
        "--phase",
        "prefill",
        "--format",
        "json",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).expect("valid JSON");
    let rows = doc["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 5 * 3); // embeddings, ln_1, q, k, v; three pairs each
    assert!(rows.iter().all(|r| r["passed"] == true));
    assert_eq!(rows[0]["checkpoint"], 0);
    assert_eq!(rows[0]["pair"], serde_json::json!(["ours", "pytorch-f32"]));
    assert_eq!(rows[0]["stats"]["max_abs"], 0.0, "wte[id] + wpe[pos] is one float32 add on both sides");
    let sources = doc["sources"].as_array().unwrap();
    let roles: Vec<&str> = sources.iter().map(|s| s["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["engine", "peer", "truth"]);
    assert!(sources[1]["generator"]["transformers"].is_string());
    assert_eq!(sources[2]["precision"], "float64");
}

/// Our engine against itself: the prompt and its continuation in one pass, one token at a time
/// and in chunks give bit-identical logits at every position, on both bundled models (the
/// coverage model's longest case has 150 positions, past two blocks of keys).
#[test]
fn one_pass_token_by_token_and_chunks_give_the_same_logits() {
    for model in [fixture(), coverage_fixture()] {
        let out =
            run(&["validate", "--model", model.to_str().unwrap(), "--checkpoint", "8", "--format", "json"]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        let rows: Vec<&serde_json::Value> = doc["rows"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["pair"][0] == "ours" && r["pair"][1] == "ours")
            .collect();
        for what in ["logits: one pass = token by token (ours)", "logits: one pass = in chunks (ours)"] {
            let of_it: Vec<_> = rows.iter().filter(|r| r["tensor"] == what).collect();
            assert_eq!(of_it.len(), 4, "{what}: one row per case on {model:?}");
            assert!(of_it.iter().all(|r| r["passed"] == true && r["detail"] == "bit-identical"), "{of_it:?}");
        }
    }
}

/// Every diff statistic of every row of ours, by row, from a `--format json` run.
fn stats_of_ours(stdout: &str) -> Vec<(String, serde_json::Value)> {
    let doc: serde_json::Value = serde_json::from_str(stdout).unwrap();
    let rows =
        doc["rows"].as_array().unwrap().iter().filter(|r| r["pair"][0] == "ours" && r["stats"].is_object());
    rows.map(|r| {
        let place = format!(
            "{} {} {} {} {} {} {}",
            r["case"], r["phase"], r["mode"], r["checkpoint"], r["layer"], r["tensor"], r["pair"][1]
        );
        (place, r["stats"].clone())
    })
    .collect()
}

/// The engine's settings: every kernel set this CPU runs passes the validation, chained and
/// isolated, and on each the numbers do not depend on the threads: 1 and 2 threads give every
/// row of ours the same statistics to the last bit (the same tensors, as far as any statistic
/// can tell). A set the CPU lacks is refused with a message.
#[test]
fn every_kernel_set_passes_and_the_threads_do_not_change_the_numbers() {
    let mut ran = Vec::new();
    for set in ["portable", "avx2", "avx512"] {
        let mut by_threads = Vec::new();
        for threads in ["1", "2"] {
            let args = [
                "--kernels",
                set,
                "--threads",
                threads,
                "validate",
                "--layer",
                "all",
                "--mode",
                "chained,isolated",
                "--format",
                "json",
            ];
            let out = run(&args);
            if out.code == 2 && out.stderr.contains(&format!("this CPU has no {set} kernels")) {
                break;
            }
            assert_eq!(out.code, 0, "{set} kernels, {threads} threads: {}", out.stderr);
            by_threads.push(stats_of_ours(&out.stdout));
        }
        if let [one, two] = &by_threads[..] {
            assert!(one.len() > 500, "{set}: {} rows", one.len());
            assert!(one == two, "{set}: 1 and 2 threads differ");
            ran.push(set);
        }
    }
    assert!(ran.contains(&"portable"), "the portable kernels run anywhere: {ran:?}");
    let out = run(&["--threads", "0", "validate"]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("--threads takes 1 or more"), "{}", out.stderr);
}

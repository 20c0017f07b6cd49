//! The validator proven by the bugs it catches and the correct engines it passes: engine
//! variants from src/plant/, in a test build of the binary (cargo feature `planted-bugs`),
//! against the bundled model's float32 and float64 references, or another model's:
//! `LLORCH_PLANTED_MODEL=DIR` names a model directory with `reference` (float32) and
//! `reference-f64` dumps of the bundled cases (`fixtures/tiny-gpt2.cases.json`); CI runs these
//! tests again on a trained-like random model that way.

#[cfg(not(feature = "planted-bugs"))]
#[test]
#[ignore = "the planted-bug engines exist only with the feature: cargo test --features planted-bugs"]
fn planted_bugs_need_the_feature() {}

#[cfg(feature = "planted-bugs")]
mod planted {
    use std::path::PathBuf;

    use crate::common::{fixture, run};
    use serde_json::Value;

    /// The model the bugs are planted in: the bundled one, or LLORCH_PLANTED_MODEL's.
    fn model() -> PathBuf {
        std::env::var_os("LLORCH_PLANTED_MODEL").map_or_else(fixture, PathBuf::from)
    }

    fn validate(variant: &str, extra: &[&str]) -> (i32, Value) {
        validate_on(&model(), variant, extra)
    }

    fn validate_on(model: &std::path::Path, variant: &str, extra: &[&str]) -> (i32, Value) {
        let model = model.to_str().expect("a UTF-8 path");
        let args = ["validate", "--model", model, "--plant", variant, "--layer", "all", "--format", "json"];
        let out = run(&[&args[..], extra].concat());
        assert!(out.code == 0 || out.code == 1, "exit {}: {}", out.code, out.stderr);
        (out.code, serde_json::from_str(&out.stdout).expect("valid JSON"))
    }

    /// Where the first failing row is, and whether it failed the accuracy verdict only
    /// (within every fixed tolerance).
    #[derive(Debug, PartialEq)]
    struct Failure {
        case: String,
        phase: String,
        checkpoint: u64,
        layer: Option<u64>,
        tensor: String,
        accuracy_only: bool,
    }

    fn first_failure(doc: &Value) -> Option<Failure> {
        let row = doc["rows"].as_array().unwrap().iter().find(|r| r["passed"] == false)?;
        Some(Failure {
            case: row["case"].as_str()?.into(),
            phase: row["phase"].as_str()?.into(),
            checkpoint: row["checkpoint"].as_u64()?,
            layer: row["layer"].as_u64(),
            tensor: row["tensor"].as_str()?.into(),
            accuracy_only: row["stats"]["mismatches"] == 0 && row["accuracy"]["passed"] == false,
        })
    }

    #[test]
    fn a_shift_of_a_few_ulps_passes_every_tolerance_and_fails_the_accuracy_verdict_where_it_is() {
        let (code, doc) = validate("attn-out-shift", &[]);
        assert_eq!(code, 1);
        let f = first_failure(&doc).expect("caught");
        assert_eq!(
            (f.case.as_str(), f.checkpoint, f.layer, f.tensor.as_str()),
            ("hello", 5, Some(0), "attn_out")
        );
        assert!(f.accuracy_only, "found by the accuracy verdict, not a fixed tolerance");
        // Every failure anywhere is the accuracy verdict's: no fixed tolerance sees the bug ...
        for row in doc["rows"].as_array().unwrap().iter().filter(|r| r["passed"] == false) {
            assert_eq!(row["stats"]["mismatches"], 0, "{row}");
        }
        // ... as a run against the float32 reference alone shows.
        let f32_only = model().join("reference");
        let (code, _) = validate("attn-out-shift", &["--reference", f32_only.to_str().unwrap()]);
        assert_eq!(code, 0, "the fixed tolerances alone pass this bug");
    }

    #[test]
    fn layer_norm_epsilon_1e_6_first_fails_at_checkpoint_1() {
        let (code, doc) = validate("ln-epsilon", &[]);
        assert_eq!(code, 1);
        let f = first_failure(&doc).expect("caught");
        assert_eq!((f.checkpoint, f.layer, f.tensor.as_str()), (1, Some(0), "ln_1"));
    }

    #[test]
    fn a_wrong_gelu_coefficient_first_fails_at_the_gelu() {
        let (code, doc) = validate("gelu-coefficient", &[]);
        assert_eq!(code, 1);
        let f = first_failure(&doc).expect("caught");
        assert_eq!((f.checkpoint, f.layer, f.tensor.as_str()), (6, Some(0), "gelu"));
        assert!(f.accuracy_only, "a 3e-4 relative change of the coefficient hides inside the tolerances");
    }

    /// Decode-path bugs: invisible on the prompt's pass, each found on the decode step at the
    /// stage that holds it. Without the decode step's checks only our engine against itself
    /// (checkpoint 8's one pass against token by token) or the end-to-end generation can show
    /// them, neither at the stage: on the trained bundled model, whose greedy text repeats "and
    /// the LORD,", ten tokens generated through the overwritten cache are HF's own.
    #[test]
    fn decode_path_bugs_are_found_at_their_stage_of_the_decode_step() {
        // (variant, its stage on the decode step, whether generation must show it)
        let cases = [
            ("decode-mask-ignores-cache", (4, Some(0), "scores"), true),
            ("decode-positions-restart", (0, None, "embeddings"), true),
            ("decode-cache-overwrite", (3, Some(0), "k_cache"), false),
        ];
        for (variant, (cp, layer, tensor), end_to_end) in cases {
            let (code, doc) = validate(variant, &[]);
            assert_eq!(code, 1, "{variant}");
            let f = first_failure(&doc).expect("caught");
            assert_eq!(
                (f.phase.as_str(), f.checkpoint, f.layer, f.tensor.as_str()),
                ("decode", cp, layer, tensor),
                "{variant}"
            );
            let (code, doc) = validate(variant, &["--phase", "prefill"]);
            match first_failure(&doc) {
                Some(f) => {
                    assert_eq!(code, 1, "{variant}");
                    let split = f.checkpoint == 8 && f.tensor.starts_with("logits: one pass = ");
                    assert!(
                        split || f.checkpoint == 12,
                        "{variant}: the prompt's pass alone sees only the split invariants and the \
                         generated tokens: {f:?}"
                    );
                }
                None => {
                    assert_eq!(code, 0, "{variant}");
                    assert!(!end_to_end, "{variant}: the generated tokens show it");
                }
            }
        }
    }

    /// Bugs that grow with the context pass the prompt's pass and the first decode step, and are
    /// found at the first later step the dumps hold (`dump_reference.py --decode-steps`), at the
    /// stage that holds them, in both modes: a position id that stops advancing after the first
    /// step (step 2, the embeddings), a cache used as a ring of the wrong capacity (from step 5
    /// on; the dumps hold step 8: the cache). Only the generated tokens could show them before,
    /// and need not.
    #[test]
    fn context_growing_bugs_are_found_at_a_later_decode_step() {
        #[rustfmt::skip]
        let bugs: &[(&str, Place, &str)] = &[
            ("decode-position-stuck", ("decode:2", 0, None, "embeddings"), "position ids off by one (one less)"),
            ("decode-cache-ring", ("decode:8", 3, Some(0), "k_cache"), "cache rows out of place"),
        ];
        for &(variant, place, cause) in bugs {
            for mode in ["chained", "isolated"] {
                let doc = caught_and_named(variant, mode, place, cause);
                // Nothing on the prompt's pass or the first decode step fails but generation.
                let early = doc["rows"].as_array().unwrap().iter().filter(|r| {
                    r["passed"] == false
                        && (r["phase"] == "prefill" || r["phase"] == "decode")
                        && r["checkpoint"] != 12
                });
                assert_eq!(early.count(), 0, "{variant} {mode}");
            }
        }
    }

    /// Correct arithmetic on another path still changes the numbers, and llorch says which
    /// setting does: a decode step that sums c_fc in another order passes every comparison with
    /// the references (float32 noise, the accuracy verdict included) and fails checkpoint 8's
    /// invariants alone, one pass against token by token and against chunks, in every case.
    #[test]
    fn a_decode_path_that_sums_differently_fails_only_the_split_invariants() {
        let (code, doc) =
            validate("decode-path-sums-reversed", &["--checkpoint", "all", "--mode", "chained,isolated"]);
        assert_eq!(code, 1);
        let failing: Vec<&Value> =
            doc["rows"].as_array().unwrap().iter().filter(|r| r["passed"] == false).collect();
        assert_eq!(failing.len(), 8, "two invariants in each of 4 cases");
        for row in failing {
            assert_eq!(
                (row["checkpoint"].as_u64(), row["pair"][0].as_str(), row["pair"][1].as_str()),
                (Some(8), Some("ours"), Some("ours"))
            );
            assert!(row["tensor"].as_str().unwrap().starts_with("logits: one pass = "), "{row}");
        }
    }

    /// The first failing row's place, and the causes its diagnosis names (the first diagnosed
    /// row's: that is the first failure's, where the accuracy verdict is the row that fails).
    fn first_failure_and_causes(doc: &Value) -> (Failure, Vec<String>) {
        let failure = first_failure(doc).expect("caught");
        let diagnosed = doc["rows"].as_array().unwrap().iter().find(|r| r["diagnosis"].is_object());
        let causes = diagnosed.map_or(Vec::new(), |r| {
            let findings = r["diagnosis"]["findings"].as_array().unwrap();
            findings.iter().map(|f| f["cause"].as_str().unwrap().to_string()).collect()
        });
        (failure, causes)
    }

    /// (phase, checkpoint, layer, tensor)
    type Place = (&'static str, u64, Option<u64>, &'static str);

    /// Classic bugs of a GPT-2 port, prompt and decode step: in chained mode and in isolated
    /// mode, the first failing row is the stage and layer that hold the bug, and the diagnosis
    /// names the cause.
    #[test]
    fn classic_bugs_are_found_at_their_stage_in_both_modes_and_diagnosed() {
        #[rustfmt::skip]
        let bugs: &[(&str, Place, &str)] = &[
            ("ln-epsilon", ("prefill", 1, Some(0), "ln_1"), "epsilon 1e-6 instead of the config's 1e-5"),
            ("unbiased-variance", ("prefill", 1, Some(0), "ln_1"), "unbiased variance"),
            ("qk-swapped", ("prefill", 2, Some(0), "q"), "ours q is c_attn's k third"),
            ("missing-attn-scale", ("prefill", 4, Some(0), "scores"), "the 1/√D scale missing"),
            ("mask-off-by-one", ("prefill", 4, Some(0), "scores"), "each query also sees the next key"),
            ("head-merge-order", ("prefill", 5, Some(0), "attn_out"), "heads merged as [T, D, H]"),
            ("attn-proj-transposed", ("prefill", 5, Some(0), "attn_out"), "c_proj weight read transposed"),
            ("attn-out-shift", ("prefill", 5, Some(0), "attn_out"), "added to every element"),
            ("erf-gelu", ("prefill", 6, Some(0), "gelu"), "the erf GELU"),
            ("gelu-coefficient", ("prefill", 6, Some(0), "gelu"), "cubic coefficient 0.04470"),
            ("mlp-bias-dropped", ("prefill", 6, Some(0), "gelu"), "c_fc bias dropped"),
            ("residual-dropped", ("prefill", 7, Some(0), "block_out"), "the MLP's residual dropped"),
            ("ln-f-skipped", ("prefill", 8, None, "ln_f"), "ln_f skipped"),
            ("temperature-multiplied", ("prefill", 11, None, "probs"), "multiplied by the temperature"),
            ("decode-positions-restart", ("decode", 0, None, "embeddings"), "position ids restart at 0"),
            ("decode-cache-overwrite", ("decode", 3, Some(0), "k_cache"), "row 0 holds position 2, row 2 empty"),
            ("decode-mask-ignores-cache", ("decode", 4, Some(0), "scores"), "the mask ignores the 2 cached positions"),
        ];
        let mut named = 0;
        for &(variant, place, cause) in bugs {
            for mode in ["chained", "isolated"] {
                caught_and_named(variant, mode, place, cause);
                named += 1;
            }
        }
        assert_eq!(named, 2 * bugs.len());
    }

    /// Asserts that `variant` in `mode` fails, first at `place`, and that the first diagnosis
    /// names `cause` first; the run's JSON.
    fn caught_and_named(variant: &str, mode: &str, place: Place, cause: &str) -> Value {
        let (code, doc) = validate(variant, &["--mode", mode]);
        assert_eq!(code, 1, "{variant} {mode}");
        let (f, causes) = first_failure_and_causes(&doc);
        let (phase, cp, layer, tensor) = place;
        assert_eq!(
            (f.phase.as_str(), f.checkpoint, f.layer, f.tensor.as_str()),
            (phase, cp, layer, tensor),
            "{variant} {mode}"
        );
        assert!(
            causes.first().is_some_and(|c| c.contains(cause)),
            "{variant} {mode}: the diagnosis names {causes:?}, not {cause:?}"
        );
        doc
    }

    /// Kernel-path bugs that leave one row, one panel or one head wrong while the rest is exact:
    /// no hypothesis of a whole stage fits them, and the diagnosis says where in the tensor the
    /// error sits and which kernel path that points to, in both modes.
    #[test]
    fn structured_kernel_bugs_are_located_within_the_tensor() {
        #[rustfmt::skip]
        let bugs: &[(&str, Place, &[&str])] = &[
            ("mlp-out-last-row-skipped", ("prefill", 6, Some(0), "mlp_out"),
             &["position 1 (the last) of ", "ours is zero there", "row remainder"]),
            ("gelu-panel-unwritten", ("prefill", 6, Some(0), "gelu"),
             &["columns 48–63 of ", "ours is zero there", "16-column panels"]),
            ("scores-head-offset", ("prefill", 4, Some(0), "scores"), &["head 1 of 4", "head's loop bound"]),
        ];
        for &(variant, place, words) in bugs {
            caught_and_located(&model(), None, variant, place, words);
        }
    }

    /// Asserts that in both modes the first failure is at `place` (of `case`, when given) and
    /// that its diagnosis's location has every one of `words`.
    fn caught_and_located(
        model: &std::path::Path,
        case: Option<&str>,
        variant: &str,
        place: Place,
        words: &[&str],
    ) {
        let (phase, cp, layer, tensor) = place;
        for mode in ["chained", "isolated"] {
            let (code, doc) = validate_on(model, variant, &["--mode", mode]);
            assert_eq!(code, 1, "{variant} {mode}");
            let row = doc["rows"].as_array().unwrap().iter().find(|r| r["passed"] == false).unwrap();
            assert_eq!(
                (
                    row["phase"].as_str(),
                    row["checkpoint"].as_u64(),
                    row["layer"].as_u64(),
                    row["tensor"].as_str()
                ),
                (Some(phase), Some(cp), layer, Some(tensor)),
                "{variant} {mode}"
            );
            if let Some(case) = case {
                assert_eq!(row["case"].as_str(), Some(case), "{variant} {mode}");
            }
            let location = row["diagnosis"]["location"].as_str().unwrap_or_default();
            for word in words {
                assert!(location.contains(word), "{variant} {mode}: {location:?} lacks {word:?}");
            }
        }
    }

    /// Bugs on paths the bundled model never takes (its widths make an even number of panels,
    /// its longest prompt has 27 tokens, under one key block) are caught on the coverage model
    /// at their stage, and located there.
    #[test]
    fn kernel_path_bugs_past_the_bundled_model_are_caught_on_the_coverage_model() {
        #[rustfmt::skip]
        let bugs: &[(&str, (&str, Place), &[&str])] = &[
            ("scores-first-key-block-only", ("long", ("prefill", 4, Some(0), "scores")),
             &["positions 64–139 of 140, columns 64–139 of 140", "ours is zero there", "blocks of 64 columns"]),
            ("odd-last-panel-dropped", ("one", ("prefill", 5, Some(0), "attn_out")),
             &["columns 128–135 of 136", "ours is zero there", "16-column panels"]),
        ];
        for &(variant, (case, place), words) in bugs {
            caught_and_located(&crate::common::coverage_fixture(), Some(case), variant, place, words);
        }
    }

    /// In isolated mode every stage after the bug runs on the reference's input, so only the
    /// stage that holds it fails: for each layer-0 bug, the failing rows of ours are that
    /// stage's (every layer has the bug, so the same stage fails on every layer).
    #[test]
    fn isolated_mode_fails_only_the_stage_that_holds_the_bug() {
        for (variant, stage) in [("head-merge-order", "attn_out"), ("erf-gelu", "gelu"), ("qk-swapped", "q")]
        {
            let (_, doc) = validate(variant, &["--isolated"]);
            let failing: Vec<&Value> = doc["rows"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|r| {
                    r["passed"] == false && r["pair"][0] == "ours" && r["checkpoint"].as_u64() < Some(10)
                })
                .collect();
            assert!(!failing.is_empty(), "{variant}");
            for row in failing {
                // qk-swapped fails q and k, the two tensors it swaps.
                let tensor = row["tensor"].as_str().unwrap();
                assert!(tensor == stage || (variant == "qk-swapped" && tensor == "k"), "{variant}: {row}");
                assert_eq!(row["mode"], "isolated");
                assert_eq!(row["blame"], "wrong");
            }
        }
    }

    /// Bugs in the reduced-precision kernels, each in the format that has them, validated against
    /// references on the same rounded weights (the model's `reference-FORMAT` dumps): a kernel
    /// bug is in every product, so the first failing row is the first product's, layer 0's q, in
    /// both modes. The precision itself never fails (the unplanted engine passes in every format:
    /// weight_formats.rs), and neither does a correct Q8_0 kernel that scales each block's sum.
    #[test]
    fn reduced_precision_kernel_bugs_are_found_at_the_first_product() {
        for (variant, format) in [
            ("q8-scale-of-previous-block", "q8_0"),
            ("q8-scale-of-next-column", "q8_0"),
            ("bf16-truncated", "bf16"),
        ] {
            for mode in ["chained", "isolated"] {
                let (code, doc) = validate(variant, &["--weights", format, "--mode", mode]);
                assert_eq!(code, 1, "{variant} {mode}");
                let f = first_failure(&doc).expect("caught");
                assert_eq!(
                    (f.phase.as_str(), f.checkpoint, f.layer, f.tensor.as_str()),
                    ("prefill", 2, Some(0), "q"),
                    "{variant} {mode}"
                );
                assert_eq!(doc["sources"][0]["weights"], format);
            }
        }
        let (code, doc) =
            validate("q8-scale-after-block-sum", &["--weights", "q8_0", "--mode", "chained,isolated"]);
        assert_eq!(code, 0, "first failure {:?}", first_failure(&doc));
        let with_verdict =
            doc["rows"].as_array().unwrap().iter().filter(|r| r["accuracy"].is_object()).count();
        assert!(with_verdict > 100, "the accuracy verdict was applied ({with_verdict} rows)");
    }

    #[test]
    fn a_reduced_precision_variant_needs_its_format() {
        let out = run(&["validate", "--plant", "bf16-truncated", "--weights", "q8_0"]);
        assert_eq!(out.code, 2);
        assert!(out.stderr.contains("is in the bf16 kernels: run it with --weights bf16"), "{}", out.stderr);
    }

    /// Correct engines with other numerics: float32 statistics, float32 GELU, float32 softmax
    /// sums, a plain loop summing in another order. Each must pass everything, the accuracy
    /// verdict and the systematic-error rule included, on the bundled model and on the coverage
    /// model (random weights, other widths).
    #[test]
    fn correct_but_different_numerics_pass() {
        for model in [model(), crate::common::coverage_fixture()] {
            for variant in ["f32-layer-norm-stats", "f32-gelu", "f32-softmax-sums", "reverse-order-matmul"] {
                let (code, doc) = validate_on(&model, variant, &["--mode", "chained,isolated"]);
                assert_eq!(code, 0, "{variant} on {model:?}: first failure {:?}", first_failure(&doc));
                let rows = doc["rows"].as_array().unwrap();
                let with_verdict = rows.iter().filter(|r| r["accuracy"].is_object()).count();
                assert!(
                    with_verdict > 100,
                    "{variant}: the accuracy verdict was applied ({with_verdict} rows)"
                );
                let with_bias = rows.iter().filter(|r| r["accuracy"]["systematic"].is_object()).count();
                assert!(with_bias > 20, "{variant}: the bias was judged ({with_bias} rows)");
            }
        }
    }

    /// Bugs below the float32 noise: a constant off by a few ulps, always the same way (GELU's
    /// cubic coefficient off by 5e-6, its √(2/π) rounded to 0.79788, the scores' scale, LayerNorm's
    /// 1/σ and the softmax's sum each 4 ulps off). In isolated mode, where ours and the peer
    /// compute each stage from one input, the bias of ours − peer over bins of the truth's value
    /// catches each at its stage, on the bundled model and on the coverage model, and on some
    /// rows of each it is the only rule that fails (max and rms pass).
    #[test]
    fn sub_noise_bugs_fail_the_systematic_rule_at_their_stage() {
        let bugs: &[(&str, u64, &str)] = &[
            ("gelu-cubic-nudged", 6, "gelu"),
            ("gelu-sqrt-two-over-pi-rounded", 6, "gelu"),
            ("scores-scale-ulps", 4, "scores"),
            ("layer-norm-inv-std-ulps", 1, "ln_1"),
            ("softmax-sum-ulps", 4, "attn_probs"),
        ];
        for model in [model(), crate::common::coverage_fixture()] {
            for &(variant, cp, tensor) in bugs {
                let (code, doc) = validate_on(&model, variant, &["--mode", "isolated"]);
                assert_eq!(code, 1, "{variant} on {model:?}");
                let f = first_failure(&doc).expect("caught");
                assert_eq!((f.checkpoint, f.tensor.as_str()), (cp, tensor), "{variant} on {model:?}");
                let failing: Vec<&Value> =
                    doc["rows"].as_array().unwrap().iter().filter(|r| r["passed"] == false).collect();
                assert!(
                    failing.iter().all(|r| r["checkpoint"].as_u64() >= Some(cp)),
                    "{variant}: before its stage"
                );
                let by_bias_alone = failing
                    .iter()
                    .filter(|r| {
                        let a = &r["accuracy"];
                        r["checkpoint"] == cp
                            && r["tensor"] == tensor
                            && r["stats"]["mismatches"] == 0
                            && a["systematic"]["passed"] == false
                            && a["err_ours"].as_f64() <= a["allowed"].as_f64()
                            && a["rms_ours"].as_f64() <= a["allowed_rms"].as_f64()
                    })
                    .count();
                assert!(by_bias_alone > 0, "{variant} on {model:?}: no row fails by its bias alone");
            }
        }
    }
}

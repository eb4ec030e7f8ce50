"""The TRIPOD+AI checklist, filled in from what a run knows.

TRIPOD+AI (Collins et al., BMJ 2024;385:e078378) lists 27 main items, several with sub-items,
for reporting studies that develop or evaluate prediction models, whatever the modelling
method. Each item below is paraphrased in a line; the wording of record is the published
checklist. An item is ``run`` when the run directory (and database) answer it, ``partial``
when they answer part of it, and ``authors`` when only the study's authors can (ethics,
funding, registration, interpretation ...).
"""

from __future__ import annotations

from typing import Any

from morphml.registry import model_types

__all__ = ["TRIPOD_ITEMS", "tripod_items"]

#: (item, section, topic, what it asks, paraphrased)
TRIPOD_ITEMS: tuple[tuple[str, str, str, str], ...] = (
    ("1", "Title", "Title",
     "Say that a prediction model is developed or evaluated, for whom, and what it predicts."),
    ("2", "Abstract", "Abstract", "A structured summary (TRIPOD+AI for Abstracts)."),
    ("3a", "Introduction", "Background",
     "Health-care context, rationale, and existing models."),
    ("3b", "Introduction", "Background",
     "Target population, intended purpose in the care pathway, intended users."),
    ("3c", "Introduction", "Background",
     "Known health inequalities between sociodemographic groups."),
    ("4", "Introduction", "Objectives",
     "Study objectives: development, evaluation, or both."),
    ("5a", "Methods", "Data", "Sources of data, rationale, representativeness."),
    ("5b", "Methods", "Data", "Dates of data collection (accrual, follow-up)."),
    ("6a", "Methods", "Participants", "Setting, number and location of centres."),
    ("6b", "Methods", "Participants", "Eligibility criteria."),
    ("6c", "Methods", "Participants", "Treatments received and how they were handled."),
    ("7", "Methods", "Data preparation",
     "Pre-processing and quality checking, and whether similar across groups."),
    ("8a", "Methods", "Outcome",
     "Definition of the outcome, time horizon, how and when assessed."),
    ("8b", "Methods", "Outcome", "Qualifications of outcome assessors, if subjective."),
    ("8c", "Methods", "Outcome", "Blinding of outcome assessment."),
    ("9a", "Methods", "Predictors", "Choice of initial predictors and any pre-selection."),
    ("9b", "Methods", "Predictors", "Definition of all predictors, how and when measured."),
    ("9c", "Methods", "Predictors", "Qualifications of predictor assessors, if subjective."),
    ("10", "Methods", "Sample size", "How the study size was arrived at and why sufficient."),
    ("11", "Methods", "Missing data", "How missing data were handled; reasons for omitting."),
    ("12a", "Methods", "Analytical methods",
     "How the data were used for development and evaluation (partitioning)."),
    ("12b", "Methods", "Analytical methods",
     "Handling of predictors (functional form, rescaling, transformation)."),
    ("12c", "Methods", "Analytical methods",
     "Model type, rationale, building steps, hyper-parameter tuning, internal validation."),
    ("12d", "Methods", "Analytical methods",
     "Heterogeneity of estimates and performance across clusters (centres)."),
    ("12e", "Methods", "Analytical methods", "Performance measures and plots, and why."),
    ("12f", "Methods", "Analytical methods", "Any model updating (e.g. recalibration)."),
    ("12g", "Methods", "Analytical methods",
     "How predictions were calculated in evaluation (formula, code, object, API)."),
    ("13", "Methods", "Class imbalance", "Class-imbalance methods, why, and recalibration."),
    ("14", "Methods", "Fairness", "Approaches to model fairness and their rationale."),
    ("15", "Methods", "Model output",
     "Output of the model (probabilities, classes) and any thresholds."),
    ("16", "Methods", "Training versus evaluation",
     "Differences between development and evaluation data."),
    ("17", "Methods", "Ethical approval", "Ethics committee and consent (or waiver)."),
    ("18a", "Open science", "Funding", "Funding sources and their role."),
    ("18b", "Open science", "Conflicts of interest", "Conflicts of interest of all authors."),
    ("18c", "Open science", "Protocol", "Where the protocol can be accessed (or none)."),
    ("18d", "Open science", "Registration", "Registration of the study (or none)."),
    ("18e", "Open science", "Data sharing", "Availability of the study data."),
    ("18f", "Open science", "Code sharing", "Availability of the analytical code."),
    ("19", "Open science", "Patient and public involvement",
     "Patient and public involvement, or a statement of none."),
    ("20a", "Results", "Participants",
     "Flow of participants; numbers with and without the outcome."),
    ("20b", "Results", "Participants",
     "Characteristics overall and per data source or setting."),
    ("20c", "Results", "Participants",
     "For evaluation: predictor distributions compared with the development data."),
    ("21", "Results", "Model development",
     "Participants and outcome events in each analysis."),
    ("22", "Results", "Model specification",
     "The full model, so others can predict with it and evaluate it; access conditions."),
    ("23a", "Results", "Model performance",
     "Performance with confidence intervals, including key subgroups."),
    ("23b", "Results", "Model performance", "Heterogeneity of performance across clusters."),
    ("24", "Results", "Model updating", "Results of any model updating."),
    ("25", "Discussion", "Interpretation",
     "Overall interpretation, including fairness, in the light of other studies."),
    ("26", "Discussion", "Limitations",
     "Limitations (sample, size, overfitting, missing data) and their effects."),
    ("27a", "Discussion", "Usability",
     "How poor-quality or unavailable inputs should be assessed and handled in use."),
    ("27b", "Discussion", "Usability",
     "Whether users interact with input handling, and the expertise required."),
    ("27c", "Discussion", "Usability", "Next steps for applicability and generalisability."),
)  # fmt: skip

_AUTHORS = "For the authors to complete."


def _counts(mapping: dict[str, Any] | None, limit: int = 8) -> str:
    items = list((mapping or {}).items())
    text = ", ".join(f"{k} {v}" for k, v in items[:limit])
    return text + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _n(value: Any) -> str:
    return "?" if value is None else str(value)


def _fmt(cell: Any) -> str:
    if not isinstance(cell, dict) or cell.get("value") is None:
        return "n/a"
    ci = cell.get("ci") or [None, None]
    text = f"{cell['value']:.3g}"
    if ci[0] is not None and ci[1] is not None:
        text += f" (95% CI {ci[0]:.3g} to {ci[1]:.3g})"
    return text


def _facts(summary: dict[str, Any]) -> dict[str, str]:
    """Item id -> text filled from the run (only items the run can speak to)."""
    kind = summary.get("kind")
    cfg = summary.get("config") or {}
    cohort = summary.get("cohort") or {}
    feats = summary.get("features") or {}
    qc = summary.get("qc")
    harm = summary.get("harmonization")
    facts: dict[str, str] = {}
    n_scans, n_subj = cohort.get("n_scans"), cohort.get("n_subjects")
    sources = _counts(cohort.get("sources"))
    sites = cohort.get("sites") or {}
    software = _counts(cohort.get("software"))
    sexes = _counts(cohort.get("sex"))
    age = cohort.get("age") or {}
    age_text = (
        f"age {age['min']:.0f}–{age['max']:.0f} years (mean {age['mean']:.1f})"
        if age.get("min") is not None and age.get("max") is not None and age.get("mean")
        else "age range not recorded"
    )
    spec = cfg.get("cohort") or {}
    rules = []
    if spec.get("sources"):
        rules.append(f"sources {', '.join(spec['sources'])}")
    for name, allowed in (spec.get("filters") or {}).items():
        rules.append(f"{name} in {{{', '.join(map(str, allowed))}}}")
    if spec.get("min_age") is not None:
        rules.append(f"age >= {spec['min_age']}")
    if spec.get("max_age") is not None:
        rules.append(f"age <= {spec['max_age']}")
    excl = (spec.get("qc") or {}).get("exclude") or []
    if excl:
        rules.append(f"scans without the QC flags {', '.join(excl)}")
    if spec.get("first_session_only", True):
        rules.append("each person's first session only")
    facts["6b"] = "Cohort rules of the config: " + ("; ".join(rules) or "every scan") + "."
    facts["5a"] = (
        f"Scans by source: {sources}. Morphometry from {software}. "
        "Rationale and representativeness: for the authors."
    )
    facts["6a"] = (
        f"{len(sites)} site(s): {_counts(sites)}. Setting (e.g. secondary care, research "
        "cohort): for the authors."
    )
    facts["20b"] = (
        f"{_n(n_scans)} scans of {_n(n_subj)} people; sex {sexes}; {age_text}; sources "
        f"{sources}; software {software}. Per-source tables: see the Cohort section."
    )
    prep = [
        "FreeSurfer/FastSurfer stats tables read into canonical feature ids "
        "{atlas}.{hemi}.{region}.{measure}; identifying headers dropped at ingest",
    ]
    fspec = feats.get("spec") or {}
    if fspec.get("log_volumes"):
        prep.append("volumes and areas as logs (row-wise)")
    if fspec.get("relative_thickness"):
        prep.append("thickness also relative to the scan's mean thickness (row-wise)")
    if fspec.get("etiv_adjust"):
        prep.append("volumes and areas adjusted for eTIV inside training folds")
    if excl:
        prep.append(f"QC exclusion by rule ({', '.join(excl)})")
    if qc:
        prep.append(
            f"{qc.get('n_excluded', 0)} of {qc.get('n_candidates', 0)} candidate scans "
            "excluded by QC"
        )
    if harm and harm.get("method") == "combat":
        prep.append("ComBat site harmonisation fitted inside each training fold")
    facts["7"] = "; ".join(prep) + ". Similarity across sociodemographic groups: for the authors."
    facts.update(_predictor_facts(summary))
    if kind == "pretrain":
        facts.update(_pretrain_facts(summary))
    elif kind == "transfer":
        facts.update(_transfer_facts(summary))
    return facts


def _predictor_facts(summary: dict[str, Any]) -> dict[str, str]:
    """Predictors, participants and code (items 9, 20b, 18e-f), for either kind of run."""
    cohort = summary.get("cohort") or {}
    feats = summary.get("features") or {}
    fspec = feats.get("spec") or {}
    run = summary.get("run") or {}
    software = _counts(cohort.get("software"))
    facts: dict[str, str] = {}
    atlases = ", ".join(
        (feats.get("atlas_descriptions") or {}).get(a, a) for a in feats.get("atlases") or {}
    )
    facts["9a"] = (
        f"All {feats.get('n_features', '?')} features of the atlases and measures selected "
        f"({atlases}; measures {', '.join(feats.get('measures') or {}) or '?'})"
        + (f", minus {', '.join(fspec['exclude'])}" if fspec.get("exclude") else "")
        + (f"; site indicators {len(feats.get('site_covariates') or [])}"
           if feats.get("site_covariates") else "")
        + ". Rationale: for the authors."
    )  # fmt: skip
    measures = ", ".join(feats.get("measures") or {}) or "morphometric measures"
    facts["9b"] = (
        f"Regional {measures} of the atlases above, measured by automated segmentation "
        f"({software}) of each scan; canonical ids are listed in the run's manifest.json. "
        "Timing relative to the outcome: for the authors."
    )
    facts["9c"] = (
        "Predictors come from automated segmentation without subjective interpretation; "
        "state any manual edits of segmentations (authors)."
    )
    code = [f"morphml {run.get('morphml_version') or '?'}"]
    if run.get("git_commit"):
        code.append(f"git commit {run['git_commit']}")
    code.append(f"config hash {str(run.get('config_hash') or '?')[:16]}")
    facts["18f"] = (
        "Analysis code: " + ", ".join(code) + "; the run directory holds the resolved config, "
        "manifest and model files, and 'morphml audit' re-fits it. Public availability: "
        "for the authors."
    )
    facts["18e"] = (
        "The database holds pseudonymised morphometry only (keyed pseudonyms, no visit dates). "
        "Availability and access conditions: for the authors."
    )
    return facts


def _pretrain_facts(summary: dict[str, Any]) -> dict[str, str]:
    cfg = summary.get("config") or {}
    pre = summary.get("pretrain") or {}
    cohort = summary.get("cohort") or {}
    fspec = (summary.get("features") or {}).get("spec") or {}
    val = pre.get("validation") or {}
    models = cfg.get("models") or {}
    targets = pre.get("targets") or []
    facts: dict[str, str] = {}
    what = " and ".join(
        {"age": "brain age (age at scan, regression)", "sex": "sex (classification)"}[t]
        for t in targets if t in ("age", "sex")
    )  # fmt: skip
    model_text = "; ".join(f"{t}: {', '.join(m)}" for t, m in models.items() if t in targets)
    facts["1"] = (
        f"Development and internal validation of models of {what} from brain morphometry "
        f"({model_text}). Wording of the title: for the authors."
    )
    facts["4"] = (
        f"Develop {what} models on pooled morphometry and estimate their performance by "
        f"{', '.join(val.get('schemes') or [])} validation, as pretraining for small clinical "
        "samples. Clinical objectives: for the authors."
    )
    facts["8a"] = (
        "Age at scan in years, as recorded by the source (birth dates are never stored); sex "
        "as recorded (male = 1). How each source assessed them: for the authors."
    )
    facts["8b"] = "Age and sex are recorded, not judged; no assessor."
    facts["8c"] = "Not applicable: recorded outcomes."
    n_sex = (cohort.get("sex") or {}).get("male")
    facts["10"] = (
        f"All {_n(cohort.get('n_scans'))} eligible scans were used"
        + (f" ({n_sex} male)" if n_sex is not None else "")
        + "; no sample-size calculation was made by morphml. Justification: for the authors."
    )
    mm = fspec.get("max_missing")
    facts["11"] = (
        f"Features missing in more than {f'{100 * mm:.0f}%' if mm is not None else '?'} of the "
        "cohort's scans "
        "were dropped before modelling; remaining gaps are imputed by the median inside "
        "training folds (linear models) or routed by the trees (XGBoost). Scans without the "
        "outcome are refused (the cohort must have it for every scan)."
    )
    facts.update(_pretrain_method_facts(summary, model_text))
    facts.update(_pretrain_result_facts(summary))
    return facts


def _pretrain_method_facts(summary: dict[str, Any], model_text: str) -> dict[str, str]:
    """A pretrain run's analysis methods (items 12-16)."""
    cfg = summary.get("config") or {}
    pre = summary.get("pretrain") or {}
    fspec = (summary.get("features") or {}).get("spec") or {}
    val = pre.get("validation") or {}
    tun = pre.get("tuning") or {}
    models = [m for t, names in (cfg.get("models") or {}).items()
              if t in (pre.get("targets") or []) for m in names]  # fmt: skip
    facts: dict[str, str] = {}
    schemes = val.get("schemes") or []
    scheme_text = {
        "kfold": f"{val.get('folds')}-fold cross-validation keeping each person's scans "
                 "together, stratified by site",
        "leave_site_out": "leave-site-out (each site held out in turn)",
        "external": f"external validation on source {val.get('external_source')}",
    }  # fmt: skip
    facts["12a"] = (
        "Outer validation: " + "; ".join(scheme_text.get(s, s) for s in schemes) + ". "
        f"Tuning in {tun.get('inner_folds')} inner folds of each outer training set; final "
        "models re-tuned and refitted on all scans. Intervals: "
        f"{val.get('bootstrap')} bootstrap resamples of people."
    )
    facts["12b"] = (
        "Volumes/areas as logs and thickness relative to mean thickness (row-wise); "
        "standardisation (linear models) and median imputation fitted in training folds"
        + ("; eTIV adjustment in training folds" if fspec.get("etiv_adjust") else "")
        + "; age modelled on the log scale."
    )
    facts["12c"] = (
        f"Models: {model_text}. Hyper-parameters tuned by {tun.get('sampler', 'Optuna')} with "
        f"{tun.get('trials')} trial(s) per study"
        + (f" (timeout {tun['timeout']} s)" if tun.get("timeout") else "")
        + f", {tun.get('inner_folds')} inner folds, pruning "
        + ("on" if tun.get("pruning") else "off")
        + (
            f"; XGBoost's number of trees set by early stopping on the inner folds (patience "
            f"{tun['early_stopping_rounds']} rounds, refit with their mean)"
            if tun.get("early_stopping_rounds") and _early_stopped(models)
            else ""
        )
        + "; internal validation as in 12a. Rationale for the model types: for the authors."
    )
    facts["12d"] = (
        "Performance is reported per site (Performance by site)"
        + ("; leave-site-out validation estimates transport to unseen sites"
           if "leave_site_out" in schemes else "")
        + ("; ComBat harmonisation of site effects" if summary.get("harmonization") else "")
        + "."
    )  # fmt: skip
    facts["12e"] = (
        "Brain age: MAE, RMSE, R², r, mean gap and the gap's correlation with age, before and "
        "after bias correction; predicted-vs-true and gap-vs-age plots. Sex: AUC, balanced "
        "accuracy, Brier score, calibration slope and intercept; ROC, precision-recall and "
        "reliability plots. Each with a 95% percentile bootstrap interval over people."
    )
    facts["12f"] = (
        "Brain-age bias correction (linear in age) fitted on inner out-of-fold predictions of "
        "each training set and applied to its test fold; no other updating."
    )
    facts["12g"] = (
        "Out-of-fold predictions of the fitted pipelines; final models are saved as XGBoost "
        "UBJ or skops files with JSON sidecars (and plain coefficients for linear models) and "
        "applied with 'morphml predict'."
    )
    facts["13"] = (
        "No resampling or weighting for class imbalance; sex splits stratified by site and sex."
    )
    facts["14"] = (
        "Performance is reported by sex (brain age) and by site; no fairness constraint was "
        "imposed. Approach and rationale: for the authors."
    )
    facts["15"] = (
        "Brain age: predicted age in years and its bias-corrected value. Sex: probability of "
        "male; balanced accuracy uses the threshold 0.5 (no threshold was tuned)."
    )
    facts["16"] = (
        "Development and evaluation use the same pooled population (internal validation)"
        + (", except the external source" if "external" in schemes else "")
        + "."
    )
    return facts


def _early_stopped(models: list[str]) -> bool:
    """Whether one of these model types has its number of trees set by early stopping."""
    types = {m.name: m for m in model_types()}
    return any(m in types and types[m].early_stopped_space is not None for m in models)


def _pretrain_result_facts(summary: dict[str, Any]) -> dict[str, str]:
    """A pretrain run's results and usability (items 20-27)."""
    pre = summary.get("pretrain") or {}
    cohort = summary.get("cohort") or {}
    qc = summary.get("qc")
    perf = pre.get("performance") or {}
    facts: dict[str, str] = {}
    facts["20a"] = (
        (f"{qc.get('n_candidates')} scans met the cohort rules before QC; "
         f"{qc.get('n_excluded')} were excluded by QC; " if qc else "")
        + f"{_n(cohort.get('n_scans'))} scans of {_n(cohort.get('n_subjects'))} people used."
    )  # fmt: skip
    facts["21"] = (
        f"Every analysis uses all {_n(cohort.get('n_scans'))} scans: each outer fold trains on "
        "the others and tests on its own; sex models: see the male counts in the performance "
        "table."
    )
    finals = (pre.get("final_models") or {}).get("models") or []
    facts["22"] = (
        f"{len(finals)} final model(s) with their hyper-parameters are listed under Final "
        "models; the files are in the run directory's models/ folder. Access conditions: for "
        "the authors."
    )
    lines = []
    for target, table in perf.items():
        key = "mae" if target == "age" else "auc"
        name = "MAE" if target == "age" else "AUC"
        for row in table.get("rows") or []:
            lines.append(f"{target} {row['model']} ({row['scheme']}): {name} {_fmt(row.get(key))}")
    facts["23a"] = (
        "; ".join(lines[:8])
        + ("" if len(lines) <= 8 else "; ...")
        + ". Subgroups: Performance by sex."
    )
    facts["23b"] = "See Performance by site."
    facts["24"] = (
        "Bias-correction slope and intercept of each final brain-age model: see Final models."
    )
    facts["27a"] = (
        "Scans should pass the same QC rules; 'morphml predict' refuses scans missing a "
        "trained feature, and sites never seen in training unless the config allows it "
        "(new_sites)."
    )
    return facts


def _transfer_facts(summary: dict[str, Any]) -> dict[str, str]:
    tr = summary.get("transfer") or {}
    target = tr.get("target") or {}
    proto = tr.get("protocol") or {}
    run = summary.get("run") or {}
    pre = run.get("pretrained") or {}
    sel = tr.get("selected") or {}
    facts: dict[str, str] = {}
    positive = target.get("positive") or "the second label"
    outcome = (
        f"{target.get('name')} (binary; positive class {positive})"
        if target.get("type") == "binary"
        else f"{target.get('name')} (continuous)"
    )
    reps = ", ".join(tr.get("representations") or {})
    facts["1"] = (
        f"Development and internal validation of a model of {outcome} in a small sample, "
        "with and without representations learned by pretraining on a large cohort. Wording: "
        "for the authors."
    )
    facts["4"] = (
        f"Compare representations ({reps}) for predicting {target.get('name')} against raw "
        "morphometry on identical splits, across training sizes."
    )
    facts["8a"] = (
        f"Outcome: {outcome}, from the phenotype '{target.get('name')}' of the database. "
        "Definition, time horizon and how it was assessed: for the authors."
    )
    facts["10"] = (
        f"{_n(target.get('n_scans'))} scans"
        + (f" ({target.get('n_positive')} positive, {target.get('n_negative')} negative)"
           if target.get("n_positive") is not None else "")
        + "; learning curve over training sizes "
        + ", ".join(map(str, proto.get("train_sizes") or []))
        + ". Justification: for the authors."
    )  # fmt: skip
    facts["11"] = (
        "Scans missing any of the pretrain run's features, or age or sex, are refused (the "
        "cohort must be restricted to complete scans); no imputation of the small sample."
    )
    facts["12a"] = (
        f"{proto.get('folds')}-fold cross-validation repeated {proto.get('repeats')} times"
        + (" (stratified by the outcome)" if target.get("type") == "binary" else "")
        + f"; learning-curve subsamples of each training fold; small models tuned in "
        f"{proto.get('inner_folds')} inner folds of the subsample. Intervals by the corrected "
        "resampled t (Nadeau and Bengio), differences from raw paired on the same splits."
    )
    facts["12b"] = (
        f"Covariates {', '.join(tr.get('covariates') or []) or 'none'} in every "
        "representation; representations computed from the pretrain run's models and "
        "pretraining cohort only (normative model, principal axes"
        + (f", {tr.get('components')} components" if tr.get("components") else "")
        + ")."
    )
    facts["12c"] = (
        f"Representations: {reps}; each fitted as a small model tuned in inner folds. The "
        f"selection rule: {sel.get('rule', '?')}."
    )
    facts["12d"] = (
        f"Target sites: {', '.join(map(str, target.get('sites') or [])) or '?'}"
        + (f"; sites never seen in pretraining: {', '.join(target['new_sites'])}"
           if target.get("new_sites") else "")
        + ". Per-site performance of the small models is not computed."
    )  # fmt: skip
    facts["12e"] = (
        f"{tr.get('metric_label', '?')} per split with corrected resampled t intervals; "
        "paired difference from raw; learning curves; label-permutation p-value of the "
        "selected representation."
    )
    facts["12f"] = "No model updating."
    facts["12g"] = "Out-of-fold scores of the small models (predictions.parquet)."
    facts["13"] = (
        "No resampling or weighting; outer and learning-curve splits stratified by the outcome."
        if target.get("type") == "binary"
        else "Not applicable (continuous outcome)."
    )
    facts["14"] = "No fairness analysis was run. Approach and rationale: for the authors."
    facts["15"] = (
        "A continuous score (decision function); AUC needs no threshold."
        if target.get("type") == "binary"
        else "A continuous prediction of the outcome."
    )
    facts["16"] = (
        f"Representations come from the pretrain run {pre.get('run_id', '?')} "
        f"({pre.get('directory', '?')}), fitted on a different cohort; the small sample's "
        "people are refused if they were in it. Differences in setting and eligibility: for "
        "the authors."
    )
    facts.update(_transfer_result_facts(summary))
    return facts


def _transfer_result_facts(summary: dict[str, Any]) -> dict[str, str]:
    """A transfer run's results and usability (items 20-27)."""
    tr = summary.get("transfer") or {}
    target = tr.get("target") or {}
    cohort = summary.get("cohort") or {}
    qc = summary.get("qc")
    sel = tr.get("selected") or {}
    facts: dict[str, str] = {}
    facts["20a"] = (
        (f"{qc.get('n_candidates')} scans met the cohort rules before QC; "
         f"{qc.get('n_excluded')} excluded by QC; " if qc else "")
        + f"{_n(cohort.get('n_scans'))} scans used"
        + (f", {target.get('n_positive')} with and {target.get('n_negative')} without the "
           "outcome" if target.get("n_positive") is not None else "")
        + "."
    )  # fmt: skip
    facts["20c"] = (
        "Compare the small sample's characteristics (Cohort) with the pretrain run's report."
    )
    facts["21"] = (
        "Training and test sizes per training size are in the comparison table (training "
        "scans, splits)."
    )
    facts["22"] = (
        "The comparison fits a model per split; no final small model is saved. The pretrain "
        "run's models are in its run directory."
    )
    perm = tr.get("permutation_p")
    facts["23a"] = (
        f"Selected: {sel.get('representation', '?')} at training size {sel.get('n_train', '?')}"
        + (f"; permutation p = {perm:.4g}" if isinstance(perm, (int, float)) else "")
        + ". All representations with intervals: see Transfer. Subgroups: not computed."
    )
    facts["23b"] = "Not computed for the small sample."
    facts["24"] = "No model updating."
    facts["27a"] = (
        "Scans must have every feature of the pretrain run, age and sex; apply the same QC."
    )
    return facts


def tripod_items(summary: dict[str, Any]) -> list[dict[str, str]]:
    """The checklist for a summary: one dict per item with ``text`` and ``status``.

    ``status`` is ``run`` (answered by the run), ``partial`` (the run answers part; the text
    says what the authors add) or ``authors`` (for the authors to complete).
    """
    facts = _facts(summary)
    out = []
    for item, section, topic, asks in TRIPOD_ITEMS:
        text = facts.get(item)
        if text is None:
            status, text = "authors", _AUTHORS
        elif "for the authors" in text or "(authors)" in text:
            status = "partial"
        else:
            status = "run"
        out.append({
            "item": item, "section": section, "topic": topic, "asks": asks,
            "text": text, "status": status,
        })  # fmt: skip
    return out

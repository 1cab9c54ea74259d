//! Telling the question type of free text, for questions that do not come with
//! MMAD's `type`. The rules are plain keyword patterns, checked in a fixed order,
//! and every decision comes with the reasons that led to it, so a person can see
//! (and overrule) why a question got its experts.

use std::sync::LazyLock;

use indexmap::IndexMap;
use regex::Regex;

use crate::dataset::QuestionType;

struct Rule {
    qtype: QuestionType,
    what: &'static str,
    pattern: Regex,
}

fn re(p: &str) -> Regex {
    Regex::new(&format!("(?i){p}")).expect("classifier patterns are valid")
}

/// Words that make a question about a defect rather than about the object.
static DEFECT: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"\b(defects?|defective|anomal\w*|abnormal\w*|flaws?|flawed|damaged?|faults?|faulty|imperfections?|scratch\w*|crack\w*|dents?|stains?|broken|contaminat\w*)\b",
    )
});

/// Checked in order when the question mentions a defect.
static DEFECT_RULES: LazyLock<Vec<Rule>> = LazyLock::new(|| {
    use QuestionType::*;
    vec![
        Rule {
            qtype: DefectClassification,
            what: "asks for the kind of defect",
            pattern: re(
                r"\b(what|which)\s+(\w+\s+){0,2}(types?|kinds?|sorts?|categor(y|ies)|class(es)?)\s+of\s+(defects?|anomal\w*|damage|flaws?|faults?)|\bclassif\w*|\bwhich\s+(defect|anomaly|flaw)\b|\bwhat\s+(defect|anomaly|flaw)\b|\bname\s+(of\s+)?the\s+(defect|anomaly)",
            ),
        },
        Rule {
            qtype: DefectLocalization,
            what: "asks where the defect is",
            pattern: re(
                r"\bwhere\b|\blocat\w*|\bposition\w*|\bwhich\s+(part|region|area|side|corner|half|quadrant)\b|\bregion\b",
            ),
        },
        Rule {
            qtype: DefectAnalysis,
            what: "asks about cause, effect or impact",
            pattern: re(
                r"\b(caus\w*|why|effects?|impacts?|consequen\w*|risks?|result\w*\s+in|leads?\s+to|affect\w*|prevent\w*|origin\w*|reasons?|influence\w*|harm\w*|danger\w*|judg\w*|assess\w*|evaluat\w*|severe|severity|serious\w*|acceptable|rework|scrap\w*|repair\w*)\b",
            ),
        },
        Rule {
            qtype: DefectDescription,
            what: "asks to describe the defect's appearance",
            pattern: re(
                r"\b(describ\w*|descriptions?|appearance|look\w*\s+like|looks?|characteri[sz]\w*|shape|colou?r|size|extent)\b",
            ),
        },
        Rule {
            qtype: AnomalyDetection,
            what: "asks whether there is a defect",
            pattern: re(
                r"\b(is|are|does|do|has|have|can|could|was|were)\b|\bany\b|\bdefect[- ]free\b",
            ),
        },
    ]
});

/// Checked in order when the question does not mention a defect.
static OBJECT_RULES: LazyLock<Vec<Rule>> = LazyLock::new(|| {
    use QuestionType::*;
    vec![
        Rule {
            qtype: AnomalyDetection,
            what: "asks whether something is wrong or normal",
            pattern: re(
                r"\banything\s+(wrong|unusual|odd)\b|\b(is|are|does|do)\b.*\b(normal|intact|ok|okay|acceptable|pass|good condition)\b",
            ),
        },
        Rule {
            qtype: ObjectClassification,
            what: "asks what the object is",
            pattern: re(
                r"\b(what|which)\s+((kind|type|sort|category)\s+of\s+)?(objects?|products?|items?|things?)\b|\bwhat\s+(is|are)\s+(this|these|that|the)\s+(objects?|products?|items?|things?)\b|\bidentify\s+the\s+(object|product|item)|\bwhat\s+is\s+(shown|depicted|pictured)",
            ),
        },
        Rule {
            qtype: ObjectStructure,
            what: "asks about structure, parts or their arrangement",
            pattern: re(
                r"\bhow\s+many\b|\bnumber\s+of\b|\bstructur\w*|\bcomponents?\b|\barrang\w*|\bconsist\w*|\bmade\s+up\b|\blayout\b|\bwhere\b|\bwhich\s+sides?\b|\bplaced\b|\bpositioned\b|\bshape\b|\bconnected\b|\bparts?\s+of\b|\bregular\w*|\bsymmetr\w*|\bevenly\b|\bspacing\b|\bspaced\b",
            ),
        },
        Rule {
            qtype: ObjectDetails,
            what: "asks about colour, material or another detail",
            pattern: re(
                r"\bcolou?rs?\b|\bmaterials?\b|\bdetails?\b|\btextures?\b|\bsurfaces?\b|\bmarks?\b|\bmarkings?\b|\blabels?\b|\btext\b|\bprint\w*|\blogos?\b|\bpatterns?\b|\bbackground\b|\bfinish\b|\bedges?\b|\bsmooth\b|\bshiny\b|\blook\w*\s+like\b|\bappearance\b",
            ),
        },
    ]
});

static YES_NO: LazyLock<Regex> = LazyLock::new(|| re(r"^\s*(yes|no)\b"));

/// Classifies a free-text question into one of MMAD's eight types.
///
/// The rules, in order: if the question mentions a defect, it is Defect
/// Classification (kind of defect), Localization (where), Analysis (cause, effect,
/// risk), Description (appearance), or else Anomaly Detection; otherwise Anomaly
/// Detection (anything wrong / normal?), Object Classification (what object),
/// Object Structure (how many, where, arrangement) or Object Details (colour,
/// material, marks). Yes/No options with no other cue mean Anomaly Detection; the
/// last resort is Object Details. The reasons name the rule and the words matched.
pub fn classify_question(
    text: &str,
    options: &IndexMap<String, String>,
) -> (QuestionType, Vec<String>) {
    let mut reasons = Vec::new();
    let yes_no = !options.is_empty() && options.values().all(|o| YES_NO.is_match(o));
    if let Some(m) = DEFECT.find(text) {
        reasons.push(format!("mentions a defect (\"{}\")", m.as_str()));
        for rule in DEFECT_RULES.iter() {
            if rule.qtype == QuestionType::AnomalyDetection
                && !yes_no
                && !rule.pattern.is_match(text)
            {
                continue;
            }
            if let Some(m) = rule.pattern.find(text) {
                reasons.push(format!("{} (\"{}\")", rule.what, m.as_str().trim()));
                return (rule.qtype.clone(), reasons);
            }
        }
        if yes_no {
            reasons.push("the options are Yes/No".into());
            return (QuestionType::AnomalyDetection, reasons);
        }
        reasons.push("no narrower cue: read as a question about the defect's kind".into());
        return (QuestionType::DefectClassification, reasons);
    }
    reasons.push("mentions no defect".into());
    for rule in OBJECT_RULES.iter() {
        if let Some(m) = rule.pattern.find(text) {
            reasons.push(format!("{} (\"{}\")", rule.what, m.as_str().trim()));
            return (rule.qtype.clone(), reasons);
        }
    }
    if yes_no {
        reasons.push("the options are Yes/No: read as a defect check".into());
        return (QuestionType::AnomalyDetection, reasons);
    }
    reasons.push("no pattern matched: read as a question about details".into());
    (QuestionType::ObjectDetails, reasons)
}

#[cfg(test)]
mod tests {
    use super::*;
    use QuestionType::*;

    fn opts(list: &[&str]) -> IndexMap<String, String> {
        list.iter()
            .enumerate()
            .map(|(i, o)| (((b'A' + i as u8) as char).to_string(), o.to_string()))
            .collect()
    }

    #[test]
    fn table() {
        let yn = opts(&["Yes", "No"]);
        let none = opts(&[]);
        let cases: &[(&str, &IndexMap<String, String>, QuestionType)] = &[
            // Anomaly Detection
            ("Is there any defect in the object?", &yn, AnomalyDetection),
            ("Does this washer show any defect?", &yn, AnomalyDetection),
            (
                "Is anything wrong with the washer in this image?",
                &yn,
                AnomalyDetection,
            ),
            ("Is the product defective?", &yn, AnomalyDetection),
            ("Are there anomalies?", &none, AnomalyDetection),
            ("Is this part normal?", &yn, AnomalyDetection),
            ("Is this bottle ok?", &none, AnomalyDetection),
            // Defect Classification
            (
                "What type of defect is present?",
                &none,
                DefectClassification,
            ),
            (
                "What kind of defect does the washer have?",
                &none,
                DefectClassification,
            ),
            ("Which defect can be seen?", &none, DefectClassification),
            (
                "What defect is visible on the cable?",
                &none,
                DefectClassification,
            ),
            ("Classify the anomaly.", &none, DefectClassification),
            // Defect Localization
            ("Where is the defect?", &none, DefectLocalization),
            (
                "In which part of the image is the defect located?",
                &none,
                DefectLocalization,
            ),
            (
                "Which region contains the anomaly?",
                &none,
                DefectLocalization,
            ),
            (
                "What is the position of the scratch?",
                &none,
                DefectLocalization,
            ),
            // Defect Description
            (
                "Which description fits the defect best?",
                &none,
                DefectDescription,
            ),
            ("Describe the defect.", &none, DefectDescription),
            ("What does the anomaly look like?", &none, DefectDescription),
            (
                "What is the appearance of the damage?",
                &none,
                DefectDescription,
            ),
            // Defect Analysis
            (
                "What most likely caused this defect?",
                &none,
                DefectAnalysis,
            ),
            (
                "What is the consequence of this defect?",
                &none,
                DefectAnalysis,
            ),
            ("What is the risk of this defect?", &none, DefectAnalysis),
            (
                "What effect will the crack have on the part?",
                &none,
                DefectAnalysis,
            ),
            (
                "What is the impact of the anomaly on function?",
                &none,
                DefectAnalysis,
            ),
            ("Why did this defect occur?", &none, DefectAnalysis),
            ("How should this defect be judged?", &none, DefectAnalysis),
            ("How severe is the damage?", &none, DefectAnalysis),
            // Object Classification
            (
                "Which object is shown in the image?",
                &none,
                ObjectClassification,
            ),
            (
                "What kind of object is being inspected here?",
                &none,
                ObjectClassification,
            ),
            ("What is this object?", &none, ObjectClassification),
            ("What is this product?", &none, ObjectClassification),
            (
                "Identify the object in the picture.",
                &none,
                ObjectClassification,
            ),
            // Object Structure
            (
                "How many holes go through the part?",
                &none,
                ObjectStructure,
            ),
            (
                "How many pins are on each side of the package?",
                &none,
                ObjectStructure,
            ),
            (
                "On which sides of the body are the pins placed?",
                &none,
                ObjectStructure,
            ),
            (
                "What is the structure of the connector?",
                &none,
                ObjectStructure,
            ),
            (
                "Which components make up the board?",
                &none,
                ObjectStructure,
            ),
            (
                "How are the threads of this material arranged?",
                &none,
                ObjectStructure,
            ),
            (
                "Is the weave pattern regular across the image?",
                &yn,
                ObjectStructure,
            ),
            // Object Details
            ("What colour is the part's surface?", &none, ObjectDetails),
            ("What color are the pins?", &none, ObjectDetails),
            (
                "What material is the housing made of?",
                &none,
                ObjectDetails,
            ),
            (
                "What marks the pin-1 orientation on the package?",
                &none,
                ObjectDetails,
            ),
            ("What does the background look like?", &none, ObjectDetails),
            (
                "How would you describe the surface texture?",
                &none,
                ObjectDetails,
            ),
            (
                "What is the main colour of the material?",
                &none,
                ObjectDetails,
            ),
            (
                "Is the outer edge of the ring smooth and unbroken?",
                &yn,
                ObjectDetails,
            ),
            ("Tell me about it.", &none, ObjectDetails),
        ];
        for (text, options, want) in cases {
            let (got, reasons) = classify_question(text, options);
            assert_eq!(&got, want, "{text:?}: {reasons:?}");
            assert!(reasons.len() >= 2, "{text:?}: {reasons:?}");
        }
    }

    #[test]
    fn reasons_name_the_words() {
        let (t, reasons) =
            classify_question("What kind of defect does the washer have?", &opts(&[]));
        assert_eq!(t, DefectClassification);
        assert_eq!(reasons[0], "mentions a defect (\"defect\")");
        assert!(
            reasons[1].contains("\"What kind of defect\""),
            "{reasons:?}"
        );
        let (t, reasons) = classify_question("Look closely.", &opts(&["Yes", "No"]));
        assert_eq!(t, AnomalyDetection);
        assert!(reasons.last().unwrap().contains("Yes/No"));
    }

    #[test]
    fn sample_dataset_questions_classify_as_labelled() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/sample/mmad.json");
        let ds = crate::dataset::MmadDataset::load(&path).unwrap();
        for q in ds.questions() {
            let (t, reasons) = classify_question(&q.question.text, &q.question.options);
            assert_eq!(t, q.question.qtype, "{}: {reasons:?}", q.question.text);
        }
    }
}

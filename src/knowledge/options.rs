//! Which knowledge entries a question's options name: the rule behind the
//! Knowledge Guide's `options` mode, and what validation uses to tell a curator
//! which options no entry answers. It belongs to the knowledge, not to the
//! pipeline, so that checking knowledge never needs the pipeline.

use std::collections::{HashMap, HashSet};

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use super::{CategoryKnowledge, NORMAL_ENTRY};

/// Why an option selected an entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OptionMatch {
    pub letter: String,
    pub option: String,
    pub entry: String,
    pub why: String,
}

/// What the options mode chose.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OptionsSelection {
    /// Entry names in file order, `good` first when present.
    pub entries: Vec<String>,
    pub matches: Vec<OptionMatch>,
    /// True when no option named any defect entry, so all of them were kept.
    pub fallback_all: bool,
}

/// Words that qualify a defect name without naming the defect; an entry name made
/// of such words only is matched on all its words.
const QUALIFIERS: &[&str] = &[
    "large", "small", "big", "top", "side", "front", "head", "neck", "inner", "outer", "type",
    "on", "of", "the", "a", "an", "and", "with", "in",
];

/// Words read as another (after lower-casing), before stemming.
const SYNONYMS: &[(&str, &[&str])] = &[
    (
        "color",
        &[
            "colour",
            "colours",
            "coloured",
            "colored",
            "colors",
            "discoloration",
            "discolouration",
            "discoloured",
            "discolored",
            "discolour",
            "discolor",
        ],
    ),
    (
        "broken",
        &[
            "break",
            "breaks",
            "broke",
            "breakage",
            "fracture",
            "fractured",
        ],
    ),
    (
        "contamination",
        &["contaminant", "contaminants", "contaminated", "foreign"],
    ),
    ("hole", &["puncture", "perforation", "perforated"]),
    ("scratch", &["scrape", "scraped", "scuff", "scuffed"]),
    ("crack", &["fissure", "fissures"]),
    ("cut", &["slit", "gash"]),
    ("missing", &["absent", "lacking"]),
    ("bent", &["bend", "bending", "deformed", "warped"]),
    ("stain", &["smear", "blot", "blotch"]),
    ("thread", &["fibre", "fiber", "fibres", "fibers", "yarn"]),
    ("glue", &["adhesive"]),
];

/// A crude stemmer: the same on both sides is all that matters.
fn stem(w: &str) -> String {
    let mut s = w.to_string();
    let n = s.len();
    if n > 4 && s.ends_with("ies") {
        s.truncate(n - 3);
        s.push('y');
    } else if n > 5 && s.ends_with("ing") {
        s.truncate(n - 3);
    } else if n > 4
        && (s.ends_with("ed")
            || s.ends_with("ches")
            || s.ends_with("shes")
            || s.ends_with("xes")
            || s.ends_with("sses")
            || s.ends_with("zes"))
    {
        s.truncate(n - 2);
    } else if n > 3 && s.ends_with('s') && !s.ends_with("ss") {
        s.truncate(n - 1);
    }
    if s.len() > 3 && s.ends_with('e') {
        s.pop();
    }
    s
}

/// A word's canonical form and, when a synonym applied, the word it was read as.
fn canon(word: &str) -> (String, Option<&'static str>) {
    let w = word.to_lowercase();
    for (target, words) in SYNONYMS {
        if words.contains(&w.as_str()) {
            return (stem(target), Some(target));
        }
    }
    (stem(&w), None)
}

fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Picks `good` plus the defect entries the options name.
pub fn select_by_options(
    entries: &CategoryKnowledge,
    options: &IndexMap<String, String>,
) -> OptionsSelection {
    let mut matches = Vec::new();
    let mut chosen: HashSet<&str> = HashSet::new();
    for (letter, option) in options {
        let option_words = words(option);
        let option_canon: HashMap<String, &str> = option_words
            .iter()
            .map(|w| (canon(w).0, w.as_str()))
            .collect();
        for name in entries.keys().filter(|n| n.as_str() != NORMAL_ENTRY) {
            let name_words = words(&name.replace('_', " "));
            let key: Vec<&String> = {
                let k: Vec<&String> = name_words
                    .iter()
                    .filter(|w| !QUALIFIERS.contains(&w.as_str()))
                    .collect();
                if k.is_empty() {
                    name_words.iter().collect()
                } else {
                    k
                }
            };
            if key.is_empty() {
                continue;
            }
            let mut notes = Vec::new();
            let all = key.iter().all(|w| {
                let (c, _) = canon(w);
                match option_canon.get(&c) {
                    Some(found) => {
                        let (_, syn) = canon(found);
                        if *found != w.as_str() {
                            notes.push(match syn {
                                Some(target) => format!("\"{found}\" read as \"{target}\""),
                                None => format!("\"{found}\" ~ \"{w}\""),
                            });
                        }
                        true
                    }
                    None => false,
                }
            });
            if all {
                let named = key
                    .iter()
                    .map(|w| w.as_str())
                    .collect::<Vec<_>>()
                    .join(", ");
                let mut why = format!("the option names {named}");
                if !notes.is_empty() {
                    why.push_str(&format!(" ({})", notes.join("; ")));
                }
                matches.push(OptionMatch {
                    letter: letter.clone(),
                    option: option.clone(),
                    entry: name.clone(),
                    why,
                });
                chosen.insert(name.as_str());
            }
        }
    }
    let fallback_all = chosen.is_empty();
    let entries_out = entries
        .keys()
        .filter(|n| n.as_str() == NORMAL_ENTRY || fallback_all || chosen.contains(n.as_str()))
        .cloned()
        .collect();
    OptionsSelection {
        entries: entries_out,
        matches,
        fallback_all,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cat(names: &[&str]) -> CategoryKnowledge {
        names
            .iter()
            .map(|n| {
                (
                    n.to_string(),
                    format!("<{n} title>\nDescription: about {n}"),
                )
            })
            .collect()
    }

    fn opts(list: &[&str]) -> IndexMap<String, String> {
        list.iter()
            .enumerate()
            .map(|(i, o)| (((b'A' + i as u8) as char).to_string(), o.to_string()))
            .collect()
    }

    #[test]
    fn options_pick_named_entries_and_good() {
        let c = cat(&["good", "bent_pin", "missing_pin", "crack"]);
        let s = select_by_options(&c, &opts(&["Missing pin", "Cracks", "No defect"]));
        assert_eq!(s.entries, ["good", "missing_pin", "crack"]);
        assert!(!s.fallback_all);
        assert_eq!(s.matches.len(), 2);
        assert_eq!(
            (s.matches[0].letter.as_str(), s.matches[0].entry.as_str()),
            ("A", "missing_pin")
        );
        assert_eq!(
            s.matches[1].why,
            "the option names crack (\"cracks\" ~ \"crack\")"
        );
    }

    #[test]
    fn synonyms_qualifiers_and_fallback() {
        let c = cat(&[
            "good",
            "broken_large",
            "broken_small",
            "contamination",
            "color",
        ]);
        let s = select_by_options(
            &c,
            &opts(&["Large breakage", "Foreign matter", "Discolouration"]),
        );
        assert_eq!(
            s.entries,
            [
                "good",
                "broken_large",
                "broken_small",
                "contamination",
                "color"
            ]
        );
        let why: Vec<&str> = s.matches.iter().map(|m| m.why.as_str()).collect();
        assert!(
            why[0].contains("\"breakage\" read as \"broken\""),
            "{why:?}"
        );
        assert!(
            why.iter()
                .any(|w| w.contains("\"discolouration\" read as \"color\"")),
            "{why:?}"
        );
        // VisA-style categories: nothing is named, so every defect entry stays.
        let visa = cat(&["good", "bad"]);
        let s = select_by_options(&visa, &opts(&["Crack", "Burn mark"]));
        assert!(s.fallback_all);
        assert_eq!(s.entries, ["good", "bad"]);
        // Both words of a two-word name must appear: "bent pin" is not "missing pin".
        let c = cat(&["good", "bent_pin", "missing_pin"]);
        let s = select_by_options(&c, &opts(&["Bent pin"]));
        assert_eq!(s.entries, ["good", "bent_pin"]);
    }

    #[test]
    fn stems_agree_on_both_sides() {
        for (a, b) in [
            ("scratches", "scratch"),
            ("squeezed", "squeeze"),
            ("holes", "hole"),
            ("threads", "thread"),
            ("missing", "missing"),
        ] {
            assert_eq!(canon(a).0, canon(b).0, "{a} / {b}");
        }
        assert_ne!(canon("pin").0, canon("bent").0);
    }
}

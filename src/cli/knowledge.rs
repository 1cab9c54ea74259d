use std::path::Path;
use std::process::ExitCode;

use echo_workbench::knowledge::{KnowledgeBase, Severity};

use crate::TextOrJson;

pub fn validate(file: &Path, format: TextOrJson) -> anyhow::Result<ExitCode> {
    let kb = KnowledgeBase::load(file)?;
    let problems = kb.validate();
    let errors = problems
        .iter()
        .filter(|p| p.severity == Severity::Error)
        .count();
    match format {
        TextOrJson::Json => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "datasets": kb.datasets.len(),
                "categories": kb.category_count(),
                "entries": kb.entry_count(),
                "problems": problems,
            }))?
        ),
        TextOrJson::Text => {
            println!(
                "{}: {} dataset(s), {} categories, {} entries",
                file.display(),
                kb.datasets.len(),
                kb.category_count(),
                kb.entry_count()
            );
            for p in &problems {
                let sev = match p.severity {
                    Severity::Error => "error",
                    Severity::Warning => "warning",
                };
                println!("{sev}: {}", p.message);
            }
            if problems.is_empty() {
                println!("no problems found");
            }
        }
    }
    Ok(if errors > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

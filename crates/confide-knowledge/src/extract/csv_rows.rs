//! CSV to text: each row becomes one paragraph, `Header: value; Header2: value2`, so a row keeps
//! its meaning when it is retrieved alone and the chunker never splits it from its headers.
//! The first row is the header row. The delimiter is the one of `,` `;` `\t` that occurs most
//! often in the first line (outside quotes); rows may have more or fewer fields than headers.

use super::{Collector, ExtractError};

pub(crate) fn extract(text: &str, out: &mut Collector) -> Result<(), ExtractError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .delimiter(delimiter(text))
        .from_reader(text.as_bytes());
    let headers: Vec<String> = reader
        .headers()
        .map_err(unreadable)?
        .iter()
        .map(one_line)
        .collect();
    let mut row = String::new();
    for record in reader.records() {
        if out.is_full() {
            break;
        }
        let record = record.map_err(unreadable)?;
        row.clear();
        for (at, value) in record.iter().enumerate() {
            let value = one_line(value);
            if value.is_empty() {
                continue;
            }
            if !row.is_empty() {
                row.push_str("; ");
            }
            if let Some(header) = headers.get(at).filter(|header| !header.is_empty()) {
                row.push_str(header);
                row.push_str(": ");
            }
            row.push_str(&value);
        }
        if !row.is_empty() {
            out.push_str(&row);
            out.paragraph();
        }
    }
    Ok(())
}

fn unreadable(error: csv::Error) -> ExtractError {
    ExtractError::Unreadable(format!("csv: {error}"))
}

/// A value's whitespace (line breaks in quoted values too) as single spaces.
fn one_line(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn delimiter(text: &str) -> u8 {
    let mut counts = [(b',', 0usize), (b';', 0), (b'\t', 0)];
    let mut quoted = false;
    for byte in text.bytes() {
        match byte {
            b'"' => quoted = !quoted,
            b'\n' if !quoted => break,
            _ if !quoted => {
                if let Some(count) = counts.iter_mut().find(|(d, _)| *d == byte) {
                    count.1 += 1;
                }
            }
            _ => {}
        }
    }
    // Ties go to the comma (first in the list).
    counts
        .iter()
        .fold(
            (b',', 0),
            |best, &(d, n)| if n > best.1 { (d, n) } else { best },
        )
        .0
}

//! One side of an order book keyed by exact fixed-point prices.
//!
//! Keys are the price's decimal value times 10^18 in an `i128`: exact for every
//! plain decimal text with at most 18 fractional digits and an integer part
//! below 10^20, so ordering and level identity are the decimal ones ("2.5" and
//! "2.50" are one level). Values are the `str` objects received, returned as they
//! are: text is never re-rendered. Any text outside that form (exponent, sign,
//! more digits) raises `NotRepresentable` before the side is touched, and the
//! Python caller moves the side to the pure-Python book (never rounds).

use pyo3::create_exception;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyString, PyTuple};
use std::collections::BTreeMap;

mod decimals;
mod diff;

create_exception!(_book_native, NotRepresentable, PyValueError);

const FRAC_DIGITS: u32 = 18;
const MAX_INT_DIGITS: usize = 20;

/// The exact fixed-point key of plain decimal text, or None when the text is not
/// of the form `[0-9]+(\.[0-9]+)?` within the fixed-point range.
fn price_key(text: &str) -> Option<i128> {
    // Prices are never negative; "-..." goes to the Python side, which refuses it.
    let digits = text.as_bytes();
    let (int_part, frac_part) = match digits.iter().position(|&b| b == b'.') {
        Some(dot) => (&digits[..dot], &digits[dot + 1..]),
        None => (digits, &digits[digits.len()..]),
    };
    if int_part.is_empty() || (digits.len() > int_part.len() && frac_part.is_empty()) {
        return None;
    }
    let significant_int = {
        let first = int_part.iter().position(|&b| b != b'0').unwrap_or(int_part.len());
        &int_part[first..]
    };
    let frac_trimmed = {
        let end = frac_part.iter().rposition(|&b| b != b'0').map_or(0, |i| i + 1);
        &frac_part[..end]
    };
    if significant_int.len() > MAX_INT_DIGITS || frac_trimmed.len() > FRAC_DIGITS as usize {
        return None;
    }
    let mut value: i128 = 0;
    for &b in int_part.iter().chain(frac_part.iter()) {
        if !b.is_ascii_digit() {
            return None;
        }
    }
    for &b in significant_int.iter().chain(frac_trimmed.iter()) {
        value = value * 10 + i128::from(b - b'0');
    }
    value *= 10i128.pow(FRAC_DIGITS - frac_trimmed.len() as u32);
    Some(value)
}

/// Whether plain decimal size text is zero in value; None when it is not plain text.
fn size_is_zero(text: &str) -> Option<bool> {
    let bytes = text.as_bytes();
    let mut seen_digit = false;
    let mut seen_dot = false;
    let mut zero = true;
    for &b in bytes {
        match b {
            b'0' => seen_digit = true,
            b'1'..=b'9' => {
                seen_digit = true;
                zero = false;
            }
            b'.' if !seen_dot && seen_digit => seen_dot = true,
            _ => return None,
        }
    }
    if !seen_digit || bytes.last() == Some(&b'.') {
        return None;
    }
    Some(zero)
}

struct Parsed {
    key: i128,
    zero: bool,
    price: Py<PyString>,
    size: Py<PyString>,
}

fn not_representable(what: &str, text: &str) -> PyErr {
    NotRepresentable::new_err(format!("{what} {text:?} is not plain fixed-point decimal text"))
}

fn parse_level(level: &Bound<'_, PyAny>) -> PyResult<Parsed> {
    // Anything but a (str, str) pair goes to the Python side, which owns the errors.
    let odd = || NotRepresentable::new_err("a level that is not a (str, str) pair");
    let (price, size): (Bound<'_, PyAny>, Bound<'_, PyAny>) = match level.downcast::<PyTuple>() {
        Ok(t) if t.len() == 2 => (t.get_item(0)?, t.get_item(1)?),
        _ => level.extract().map_err(|_| odd())?,
    };
    let price = price.downcast_into::<PyString>().map_err(|_| odd())?;
    let size = size.downcast_into::<PyString>().map_err(|_| odd())?;
    let price_text = price.to_str()?;
    let size_text = size.to_str()?;
    let key = price_key(price_text).ok_or_else(|| not_representable("price", price_text))?;
    let zero = size_is_zero(size_text).ok_or_else(|| not_representable("size", size_text))?;
    Ok(Parsed { key, zero, price: price.unbind(), size: size.unbind() })
}

/// Every level parsed before any is applied: a side is never half-updated.
fn parse_levels(levels: &Bound<'_, PyAny>) -> PyResult<Vec<Parsed>> {
    if let Ok(list) = levels.downcast::<PyList>() {
        let mut out = Vec::with_capacity(list.len());
        for level in list.iter() {
            out.push(parse_level(&level)?);
        }
        return Ok(out);
    }
    let mut out = Vec::new();
    for level in levels.try_iter()? {
        out.push(parse_level(&level?)?);
    }
    Ok(out)
}

#[pyclass(module = "operators._book_native")]
struct NativeSide {
    #[pyo3(get)]
    descending: bool,
    levels: BTreeMap<i128, (Py<PyString>, Py<PyString>)>,
}

impl NativeSide {
    fn level_tuple<'py>(
        py: Python<'py>,
        level: &(Py<PyString>, Py<PyString>),
    ) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, [level.0.clone_ref(py), level.1.clone_ref(py)])
    }
}

#[pymethods]
impl NativeSide {
    #[new]
    fn new(descending: bool) -> Self {
        NativeSide { descending, levels: BTreeMap::new() }
    }

    /// Absolute sizes per price; a zero size removes the level.
    fn update(&mut self, levels: &Bound<'_, PyAny>) -> PyResult<()> {
        for level in parse_levels(levels)? {
            if level.zero {
                self.levels.remove(&level.key);
            } else {
                self.levels.insert(level.key, (level.price, level.size));
            }
        }
        Ok(())
    }

    /// The side becomes exactly the non-zero levels given.
    fn replace(&mut self, levels: &Bound<'_, PyAny>) -> PyResult<()> {
        let parsed = parse_levels(levels)?;
        self.levels.clear();
        for level in parsed {
            if !level.zero {
                self.levels.insert(level.key, (level.price, level.size));
            }
        }
        Ok(())
    }

    fn set(&mut self, price: &Bound<'_, PyString>, size: &Bound<'_, PyString>) -> PyResult<()> {
        let py = price.py();
        let level = PyTuple::new(py, [price.clone(), size.clone()])?;
        let list = PyList::new(py, [level])?;
        self.update(list.as_any())
    }

    fn remove(&mut self, price: &Bound<'_, PyString>) -> PyResult<bool> {
        let text = price.to_str()?;
        let key = price_key(text).ok_or_else(|| not_representable("price", text))?;
        Ok(self.levels.remove(&key).is_some())
    }

    fn clear(&mut self) {
        self.levels.clear();
    }

    /// The best n levels, best first, as (price_text, size_text) tuples.
    fn top<'py>(&self, py: Python<'py>, n: isize) -> PyResult<Bound<'py, PyList>> {
        let count = if n <= 0 { 0 } else { n as usize };
        let out = PyList::empty(py);
        if self.descending {
            for level in self.levels.values().rev().take(count) {
                out.append(Self::level_tuple(py, level)?)?;
            }
        } else {
            for level in self.levels.values().take(count) {
                out.append(Self::level_tuple(py, level)?)?;
            }
        }
        Ok(out)
    }

    fn best<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyTuple>>> {
        let level = if self.descending {
            self.levels.values().next_back()
        } else {
            self.levels.values().next()
        };
        level.map(|l| Self::level_tuple(py, l)).transpose()
    }

    fn __len__(&self) -> usize {
        self.levels.len()
    }
}

#[pymodule]
fn _book_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<NativeSide>()?;
    m.add_function(wrap_pyfunction!(diff::apply_diff, m)?)?;
    m.add("NotRepresentable", m.py().get_type::<NotRepresentable>())?;
    decimals::register(m)?;
    Ok(())
}

//! Gate expressions: `<expression> <comparison> <expression>`, where an expression is arithmetic
//! (`+ - * /`, parentheses) over numbers and metric paths like `async.latency_ms.p99` (a design,
//! then a path into its results).

use serde_json::Value;

use crate::{GateError, GateResult, Kind, median};

/// A metric: a design and a path into its results (`async.requests.status.503`).
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    pub design: String,
    pub path: Vec<String>,
}

impl Metric {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = text.split('.');
        let design = parts
            .next()
            .filter(|d| !d.is_empty())
            .ok_or("a metric starts with a design name")?;
        let path: Vec<String> = parts.map(str::to_string).collect();
        if path.is_empty() || path.iter().any(String::is_empty) {
            return Err(format!(
                "`{text}` is not a metric path like async.latency_ms.p99"
            ));
        }
        Ok(Self {
            design: design.to_string(),
            path,
        })
    }

    pub fn name(&self) -> String {
        format!("{}.{}", self.design, self.path.join("."))
    }

    /// Checks the path against the results schema: the design must be one fanbench knows
    /// (`results::DESIGNS`), every step must exist (map keys, like a delivery channel, may be
    /// anything) and it must end at a number or a boolean.
    pub fn check_name(&self, rule: &str) -> Result<(), GateError> {
        self.check_name_in(rule, &[])
    }

    /// [`Metric::check_name`] for gates on a finished run: the design may also be any design the
    /// run holds (`present`), whatever its name, and an unknown one is named beside them.
    pub fn check_name_in(&self, rule: &str, present: &[&str]) -> Result<(), GateError> {
        let unknown = |message: String| GateError::UnknownMetric {
            rule: rule.to_string(),
            metric: self.name(),
            message,
        };
        let design = self.design.as_str();
        if !results::DESIGNS.contains(&design) && !present.contains(&design) {
            let known = results::DESIGNS.join(", ");
            return Err(unknown(if present.is_empty() {
                format!("no design `{design}`: a metric starts with one of {known}")
            } else {
                format!(
                    "no design `{design}`: this run has {}; a metric starts with one of those or {known}",
                    results::ordered_designs(present.iter().copied()).join(", ")
                )
            }));
        }
        let schema: Value =
            serde_json::from_str(results::SCHEMA).map_err(|e| unknown(e.to_string()))?;
        let defs = &schema["$defs"];
        let resolve = |node: &Value| -> Value {
            match node
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix("#/$defs/"))
            {
                Some(name) => defs[name].clone(),
                None => node.clone(),
            }
        };
        let mut node = defs["design"].clone();
        let mut walked = Vec::new();
        for step in &self.path {
            node = resolve(&node);
            // A nullable object (`oneOf: [null, {...}]`) is read as its object.
            if let Some(options) = node.get("oneOf").and_then(Value::as_array) {
                if let Some(obj) = options.iter().find(|o| o["type"] == "object") {
                    node = obj.clone();
                }
            }
            let next = match node.get("properties").and_then(|p| p.get(step)) {
                Some(n) => n.clone(),
                None => match node.get("additionalProperties") {
                    Some(extra) if extra.is_object() => extra.clone(),
                    _ => {
                        let known: Vec<String> = node
                            .get("properties")
                            .and_then(Value::as_object)
                            .map(|p| p.keys().cloned().collect())
                            .unwrap_or_default();
                        let at = if walked.is_empty() {
                            self.design.clone()
                        } else {
                            format!("{}.{}", self.design, walked.join("."))
                        };
                        return Err(unknown(if known.is_empty() {
                            format!("`{at}` has no fields")
                        } else {
                            format!("`{at}` has no `{step}`; it has {}", known.join(", "))
                        }));
                    }
                },
            };
            node = next;
            walked.push(step.clone());
        }
        let node = resolve(&node);
        let types: Vec<&str> = match &node["type"] {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        if types
            .iter()
            .any(|t| matches!(*t, "number" | "integer" | "boolean"))
        {
            Ok(())
        } else {
            Err(unknown("it is not a number; name a field below it".into()))
        }
    }

    /// The metric's value in one results document.
    pub fn value(&self, doc: &Value, rule: &str) -> Result<f64, GateError> {
        let designs = &doc["designs"];
        let Some(mut node) = designs.get(&self.design) else {
            let have: Vec<&str> = designs
                .as_object()
                .map(|o| results::ordered_designs(o.keys().map(String::as_str)))
                .unwrap_or_default();
            return Err(GateError::MissingDesign {
                rule: rule.to_string(),
                design: self.design.clone(),
                have: if have.is_empty() {
                    "none".into()
                } else {
                    have.join(", ")
                },
            });
        };
        for (i, step) in self.path.iter().enumerate() {
            let missing = |message: String| GateError::MissingValue {
                rule: rule.to_string(),
                metric: self.name(),
                message,
            };
            if node.is_null() {
                return Err(missing(format!(
                    "it is null before `{step}`: this run did not measure it"
                )));
            }
            // Outcome classes nothing fell into are left out of the results: their count is 0,
            // and they have no percentiles.
            let empty_class = i == 1 && self.path[0] == "latency_ms_by_class";
            match node.get(step) {
                Some(next) => node = next,
                None if empty_class && self.path.get(2).is_some_and(|f| f == "count") => {
                    return Ok(0.0);
                }
                None if empty_class => {
                    return Err(GateError::EmptyClass {
                        rule: rule.to_string(),
                        class: step.clone(),
                    });
                }
                None => return Err(missing(format!("no `{step}` there"))),
            }
        }
        match node {
            Value::Number(n) => n.as_f64().ok_or_else(|| GateError::MissingValue {
                rule: rule.to_string(),
                metric: self.name(),
                message: "not a number".into(),
            }),
            Value::Bool(b) => Ok(if *b { 1.0 } else { 0.0 }),
            Value::Null => Err(GateError::MissingValue {
                rule: rule.to_string(),
                metric: self.name(),
                message: "it is null: this run did not measure it".into(),
            }),
            _ => Err(GateError::MissingValue {
                rule: rule.to_string(),
                metric: self.name(),
                message: "not a number".into(),
            }),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Number(f64),
    Metric(Metric),
    Binary(Box<Expr>, char, Box<Expr>),
}

impl Expr {
    fn eval(&self, doc: &Value, rule: &str) -> Result<f64, GateError> {
        Ok(match self {
            Expr::Number(n) => *n,
            Expr::Metric(m) => m.value(doc, rule)?,
            Expr::Binary(a, op, b) => {
                let (a, b) = (a.eval(doc, rule)?, b.eval(doc, rule)?);
                match op {
                    '+' => a + b,
                    '-' => a - b,
                    '*' => a * b,
                    _ => a / b,
                }
            }
        })
    }

    fn metrics<'a>(&'a self, out: &mut Vec<&'a Metric>) {
        match self {
            Expr::Number(_) => {}
            Expr::Metric(m) => out.push(m),
            Expr::Binary(a, _, b) => {
                a.metrics(out);
                b.metrics(out);
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Cmp {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

/// A parsed threshold or invariant.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub text: String,
    lhs: Expr,
    cmp: Cmp,
    rhs: Expr,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Number(f64),
    Name(String),
    Op(char),
    Open,
    Close,
    Cmp(Cmp),
}

fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' => i += 1,
            '(' => {
                out.push(Token::Open);
                i += 1;
            }
            ')' => {
                out.push(Token::Close);
                i += 1;
            }
            '+' | '-' | '*' | '/' => {
                out.push(Token::Op(c));
                i += 1;
            }
            '<' | '>' | '=' | '!' => {
                let two = chars.get(i + 1) == Some(&'=');
                let cmp = match (c, two) {
                    ('<', false) => Cmp::Lt,
                    ('<', true) => Cmp::Le,
                    ('>', false) => Cmp::Gt,
                    ('>', true) => Cmp::Ge,
                    ('=', true) => Cmp::Eq,
                    ('!', true) => Cmp::Ne,
                    _ => {
                        return Err(format!(
                            "`{c}` at column {}: comparisons are < <= > >= == !=",
                            i + 1
                        ));
                    }
                };
                out.push(Token::Cmp(cmp));
                i += if two { 2 } else { 1 };
            }
            c if c.is_ascii_digit() => {
                let start = i;
                while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                    i += 1;
                }
                let text: String = chars[start..i].iter().collect();
                // A number followed by letters is a path segment like `status.503` only after a
                // dot, which the name branch consumes; here it must be a plain number.
                let n = text
                    .parse()
                    .map_err(|_| format!("`{text}` is not a number"))?;
                out.push(Token::Number(n));
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == '.')
                {
                    i += 1;
                }
                out.push(Token::Name(chars[start..i].iter().collect()));
            }
            other => return Err(format!("unexpected `{other}` at column {}", i + 1)),
        }
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn expr(&mut self) -> Result<Expr, String> {
        let mut lhs = self.term()?;
        while let Some(Token::Op(op @ ('+' | '-'))) = self.peek().cloned() {
            self.pos += 1;
            lhs = Expr::Binary(Box::new(lhs), op, Box::new(self.term()?));
        }
        Ok(lhs)
    }

    fn term(&mut self) -> Result<Expr, String> {
        let mut lhs = self.atom()?;
        while let Some(Token::Op(op @ ('*' | '/'))) = self.peek().cloned() {
            self.pos += 1;
            lhs = Expr::Binary(Box::new(lhs), op, Box::new(self.atom()?));
        }
        Ok(lhs)
    }

    fn atom(&mut self) -> Result<Expr, String> {
        let token = self.peek().cloned();
        self.pos += 1;
        match token {
            Some(Token::Number(n)) => Ok(Expr::Number(n)),
            Some(Token::Op('-')) => Ok(Expr::Binary(
                Box::new(Expr::Number(0.0)),
                '-',
                Box::new(self.atom()?),
            )),
            Some(Token::Name(name)) => Metric::parse(&name).map(Expr::Metric),
            Some(Token::Open) => {
                let e = self.expr()?;
                match self.peek() {
                    Some(Token::Close) => {
                        self.pos += 1;
                        Ok(e)
                    }
                    _ => Err("a `(` is not closed".into()),
                }
            }
            Some(other) => Err(format!("expected a number or a metric, found {other:?}")),
            None => Err("the expression ends too early".into()),
        }
    }
}

/// Parses `<expression> <comparison> <expression>`.
pub fn parse_rule(text: &str) -> Result<Rule, GateError> {
    let syntax = |message: String| GateError::Syntax {
        rule: text.to_string(),
        message,
    };
    let tokens = tokenize(text).map_err(syntax)?;
    let mut p = Parser { tokens, pos: 0 };
    let lhs = p.expr().map_err(syntax)?;
    let cmp = match p.peek() {
        Some(Token::Cmp(c)) => *c,
        _ => {
            return Err(syntax(
                "expected a comparison (< <= > >= == !=) after the first expression".into(),
            ));
        }
    };
    p.pos += 1;
    let rhs = p.expr().map_err(syntax)?;
    if p.pos != p.tokens.len() {
        return Err(syntax("unexpected text after the comparison".into()));
    }
    let rule = Rule {
        text: text.to_string(),
        lhs,
        cmp,
        rhs,
    };
    if rule.metrics().is_empty() {
        return Err(syntax("a gate must name at least one metric".into()));
    }
    Ok(rule)
}

impl Rule {
    pub fn metrics(&self) -> Vec<&Metric> {
        let mut out = Vec::new();
        self.lhs.metrics(&mut out);
        self.rhs.metrics(&mut out);
        out
    }

    /// Checks every metric name against the results schema.
    pub fn check_names(&self) -> Result<(), GateError> {
        self.check_names_in(&[])
    }

    /// [`Rule::check_names`], also accepting the designs a finished run holds.
    pub fn check_names_in(&self, present: &[&str]) -> Result<(), GateError> {
        self.metrics()
            .into_iter()
            .try_for_each(|m| m.check_name_in(&self.text, present))
    }

    /// The rule as a plain upper bound, `metric < number` or `metric <= number`: the metric and
    /// the number. `None` for any other shape (an expression, a lower bound, an invariant).
    pub fn upper_bound(&self) -> Option<(&Metric, f64)> {
        match (&self.lhs, self.cmp, &self.rhs) {
            (Expr::Metric(m), Cmp::Lt | Cmp::Le, Expr::Number(n)) => Some((m, *n)),
            _ => None,
        }
    }

    /// An invariant compares designs (two or more distinct designs named); a threshold one.
    pub fn kind(&self) -> Kind {
        let mut designs: Vec<&str> = self.metrics().iter().map(|m| m.design.as_str()).collect();
        designs.sort_unstable();
        designs.dedup();
        if designs.len() > 1 {
            Kind::Invariant
        } else {
            Kind::Threshold
        }
    }

    /// Evaluates the rule on each repeat and compares the medians. A value that is not a finite
    /// number (a division by zero, say) fails the gate, saying why.
    pub fn evaluate(&self, repeats: &[Value]) -> Result<GateResult, GateError> {
        let lhs: Vec<f64> = repeats
            .iter()
            .map(|d| self.lhs.eval(d, &self.text))
            .collect::<Result<_, _>>()?;
        let rhs: Vec<f64> = repeats
            .iter()
            .map(|d| self.rhs.eval(d, &self.text))
            .collect::<Result<_, _>>()?;
        let (value, limit) = (median(&lhs), median(&rhs));
        let finite = value.is_finite() && limit.is_finite();
        let passed = finite
            && match self.cmp {
                Cmp::Lt => value < limit,
                Cmp::Le => value <= limit,
                Cmp::Gt => value > limit,
                Cmp::Ge => value >= limit,
                Cmp::Eq => value == limit,
                Cmp::Ne => value != limit,
            };
        let margin = match self.cmp {
            Cmp::Lt | Cmp::Le => limit - value,
            Cmp::Gt | Cmp::Ge => value - limit,
            Cmp::Eq => -(value - limit).abs(),
            Cmp::Ne => (value - limit).abs(),
        };
        let detail = if !finite {
            format!(
                "the value is {value} against {limit}: not a finite number (a division by zero?)"
            )
        } else if repeats.len() > 1 {
            format!("median of {} repeats", repeats.len())
        } else {
            String::new()
        };
        Ok(GateResult {
            name: self.text.clone(),
            kind: self.kind(),
            value,
            limit,
            margin,
            passed,
            detail,
            skipped: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc(sync_p99: f64, async_p99: f64) -> Value {
        json!({ "designs": {
            "sync": { "latency_ms": { "p99": sync_p99 }, "requests": { "status": { "503": 40 } }, "trustworthy": true,
                      "reconciliation": null },
            "async": { "latency_ms": { "p99": async_p99 }, "requests": { "status": { "503": 0 } }, "trustworthy": false,
                       "reconciliation": { "lost": 0 } },
        }})
    }

    fn eval(rule: &str, docs: &[Value]) -> Result<GateResult, GateError> {
        parse_rule(rule)?.evaluate(docs)
    }

    #[test]
    fn only_a_metric_below_a_number_is_an_upper_bound() {
        let bound = |text: &str| {
            parse_rule(text)
                .unwrap()
                .upper_bound()
                .map(|(m, n)| (m.name(), n))
        };
        assert_eq!(
            bound("async.latency_ms.p99 < 250"),
            Some(("async.latency_ms.p99".into(), 250.0))
        );
        assert_eq!(
            bound("sync.latency_ms.p99 <= 6000"),
            Some(("sync.latency_ms.p99".into(), 6000.0))
        );
        for other in [
            "sync.latency_ms.p99 > 10",
            "sync.latency_ms.p99 * 2 < 250",
            "250 > sync.latency_ms.p99",
            "sync.latency_ms.p99 < async.latency_ms.p99",
        ] {
            assert_eq!(bound(other), None, "{other}");
        }
    }

    #[test]
    fn verdicts_from_fixture_data() {
        let d = [doc(5000.0, 4.0)];
        let cases: &[(&str, bool)] = &[
            ("async.latency_ms.p99 < 100", true),
            ("async.latency_ms.p99 < 4", false),
            ("async.latency_ms.p99 <= 4", true),
            ("async.requests.status.503 == 0", true),
            ("sync.requests.status.503 == 0", false),
            ("async.reconciliation.lost == 0", true),
            ("sync.latency_ms.p99 / async.latency_ms.p99 > 10", true),
            ("sync.latency_ms.p99 / async.latency_ms.p99 > 2000", false),
            ("(sync.latency_ms.p99 - 1000) / 2 >= 2000", true),
            ("async.trustworthy == 1", false),
            ("sync.trustworthy != 0", true),
            ("-async.latency_ms.p99 < 0", true),
        ];
        for (rule, want) in cases {
            assert_eq!(eval(rule, &d).unwrap().passed, *want, "{rule}");
        }
    }

    #[test]
    fn margins_and_kinds() {
        let r = eval("async.latency_ms.p99 < 100", &[doc(5000.0, 4.0)]).unwrap();
        assert_eq!(
            (r.value, r.limit, r.margin, r.kind),
            (4.0, 100.0, 96.0, Kind::Threshold)
        );
        let r = eval(
            "sync.latency_ms.p99 / async.latency_ms.p99 > 10",
            &[doc(5000.0, 4.0)],
        )
        .unwrap();
        assert_eq!(
            (r.value, r.margin, r.kind),
            (1250.0, 1240.0, Kind::Invariant)
        );
    }

    #[test]
    fn medians_of_repeats_decide() {
        let repeats = [doc(5000.0, 4.0), doc(5000.0, 500.0), doc(5000.0, 6.0)];
        let r = eval("async.latency_ms.p99 < 100", &repeats).unwrap();
        assert!(r.passed, "one outlier of three does not fail the gate");
        assert_eq!(r.value, 6.0);
    }

    #[test]
    fn division_by_zero_and_nan_fail_with_a_reason() {
        let r = eval(
            "sync.latency_ms.p99 / async.latency_ms.p99 > 10",
            &[doc(5000.0, 0.0)],
        )
        .unwrap();
        assert!(
            !r.passed && r.detail.contains("not a finite number"),
            "{r:?}"
        );
        let r = eval(
            "async.latency_ms.p99 / async.latency_ms.p99 < 10",
            &[doc(0.0, 0.0)],
        )
        .unwrap();
        assert!(!r.passed && r.value.is_nan(), "{r:?}");
    }

    #[test]
    fn missing_designs_and_values_are_errors_not_failures() {
        let target = json!({ "designs": { "target": { "latency_ms": { "p99": 1.0 } } } });
        let err = eval("async.latency_ms.p99 < 100", &[target]).unwrap_err();
        assert!(matches!(err, GateError::MissingDesign { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("has no `async` design (it has target)"),
            "{err}"
        );
        let err = eval("sync.reconciliation.lost == 0", &[doc(1.0, 1.0)]).unwrap_err();
        assert!(err.to_string().contains("null"), "{err}");
    }

    #[test]
    fn syntax_errors_say_what_was_expected() {
        for (rule, want) in [
            ("async.latency_ms.p99 100", "expected a comparison"),
            ("async.latency_ms.p99 < ", "ends too early"),
            ("async.latency_ms.p99 =< 3", "comparisons are"),
            ("3 < 4", "at least one metric"),
            ("(async.latency_ms.p99 < 3", "not closed"),
            ("async.latency_ms.p99 < 3 3", "unexpected text"),
            ("async < 3", "not a metric path"),
            ("async.latency_ms.p99 # 3", "unexpected `#`"),
        ] {
            let err = parse_rule(rule).unwrap_err().to_string();
            assert!(err.contains(want), "{rule}: {err}");
        }
    }

    #[test]
    fn names_are_checked_against_the_schema() {
        for ok in [
            "async.latency_ms.p99 < 1",
            "async.requests.status.503 < 1",
            "async.delivery.sms.p99_ms < 1",
            "async.reconciliation.lost < 1",
            "async.drain.seconds < 1",
            "async.trustworthy == 1",
            "sync.send_lag_ms.p99 < 1",
        ] {
            parse_rule(ok)
                .unwrap()
                .check_names()
                .unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for (bad, want) in [
            (
                "async.latency_ms.p98 < 1",
                "`async.latency_ms` has no `p98`; it has",
            ),
            ("async.latencies.p99 < 1", "has no `latencies`"),
            ("async.requests.status.504 < 1", "has no `504`"),
            ("async.latency_ms < 1", "not a number"),
            ("async.timeline.t < 1", "no fields"),
        ] {
            let err = parse_rule(bad)
                .unwrap()
                .check_names()
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{bad}: {err}");
        }
    }
}

//! Parameterised SQL, built piece by piece: text with `$n` placeholders, and the values
//! apart. No value is ever spliced into SQL text.

use tokio_postgres::types::ToSql;

/// SQL text and the values of its `$n` parameters.
#[derive(Default)]
pub struct Sql {
    /// The SQL, with `$n` placeholders.
    pub text: String,
    params: Vec<Box<dyn ToSql + Sync + Send>>,
}

impl Sql {
    /// SQL starting with `text`, without parameters.
    pub fn new(text: &str) -> Self {
        Sql {
            text: text.to_owned(),
            params: Vec::new(),
        }
    }

    /// Adds a parameter and returns its placeholder.
    pub fn bind(&mut self, value: impl ToSql + Sync + Send + 'static) -> String {
        self.params.push(Box::new(value));
        format!("${}", self.params.len())
    }

    /// Appends SQL text; values go through `bind` instead.
    pub fn push(&mut self, text: &str) {
        self.text.push_str(text);
    }

    /// The parameter values, as tokio-postgres queries take them.
    pub fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_placeholders_in_order() {
        let mut sql = Sql::new("SELECT 1 WHERE true");
        let a = sql.bind("x'; DROP TABLE audit_logs; --".to_owned());
        let b = sql.bind(42i64);
        sql.push(&format!(" AND username = {a} AND user_id = {b}"));
        assert_eq!(
            sql.text,
            "SELECT 1 WHERE true AND username = $1 AND user_id = $2"
        );
        assert_eq!(sql.params().len(), 2);
    }
}

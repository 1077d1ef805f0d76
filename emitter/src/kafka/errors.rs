//! Kafka client errors as floe errors: retryable or fatal.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::error::Error;

/// Wraps a client error with what the backend was doing and whether the same
/// call may succeed later.
pub(crate) fn kafka_error(operation: impl Into<String>, cause: KafkaError) -> Error {
    Error::Kafka {
        operation: operation.into(),
        retryable: is_retryable(&cause),
        cause,
    }
}

/// Transient conditions (the broker unreachable or busy, a timeout, a full
/// local queue, a leader moving) are retryable; everything else — failed
/// authentication or authorization, invalid configuration, a record too
/// large, an unknown topic, a fatal producer state — is not.
pub(crate) fn is_retryable(error: &KafkaError) -> bool {
    match error {
        // The client is gone or misconfigured: retrying the call cannot help.
        KafkaError::Canceled
        | KafkaError::ClientConfig(..)
        | KafkaError::ClientCreation(_)
        | KafkaError::AdminOpCreation(_)
        | KafkaError::Nul(_)
        | KafkaError::MessageConsumptionFatal(_) => false,
        KafkaError::NoMessageReceived => true,
        // `rdkafka_error_code` does not look inside admin errors.
        KafkaError::AdminOp(code) => is_retryable_code(*code),
        other => other.rdkafka_error_code().is_some_and(is_retryable_code),
    }
}

/// The retryable librdkafka and broker error codes.
pub(crate) fn is_retryable_code(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        code,
        C::BrokerTransportFailure
            | C::AllBrokersDown
            | C::Resolve
            | C::MessageTimedOut
            | C::OperationTimedOut
            | C::RequestTimedOut
            | C::TimedOutQueue
            | C::QueueFull
            | C::NetworkException
            | C::LeaderNotAvailable
            | C::NotLeaderForPartition
            | C::PreferredLeaderNotAvailable
            | C::NotEnoughReplicas
            | C::NotEnoughReplicasAfterAppend
            | C::FencedLeaderEpoch
            | C::UnknownLeaderEpoch
            | C::Retry
            | C::PurgeInflight
            | C::PurgeQueue
            // UNKNOWN_SERVER_ERROR: what a broker answers while it shuts down
            // (tansu, once its storage has stopped); the append's outcome is
            // unknown as with every failed append, and retrying is how it
            // resolves.
            | C::Unknown
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_and_timeouts_retry_auth_and_size_do_not() {
        use RDKafkaErrorCode as C;
        for code in [
            C::BrokerTransportFailure,
            C::AllBrokersDown,
            C::MessageTimedOut,
            C::QueueFull,
            C::RequestTimedOut,
        ] {
            assert!(
                is_retryable(&KafkaError::MessageProduction(code)),
                "{code:?}"
            );
        }
        for code in [
            C::TopicAuthorizationFailed,
            C::SaslAuthenticationFailed,
            C::Authentication,
            C::InvalidConfig,
            C::MessageSizeTooLarge,
            C::UnknownTopicOrPartition,
            C::Fatal,
        ] {
            assert!(
                !is_retryable(&KafkaError::MessageProduction(code)),
                "{code:?}"
            );
        }
        let e: floe_engine::Error = kafka_error(
            "producing to t",
            KafkaError::MessageProduction(C::AllBrokersDown),
        )
        .into_pipeline_error("kafka");
        assert!(e.is_retryable());
        assert!(
            e.to_string()
                .starts_with("pipeline kafka: producing to t: "),
            "{e}"
        );
        assert!(!kafka_error("x", KafkaError::Canceled).is_retryable());
        assert!(is_retryable(&KafkaError::AdminOp(C::OperationTimedOut)));
        assert!(!is_retryable(&KafkaError::AdminOp(
            C::TopicAuthorizationFailed
        )));
    }
}

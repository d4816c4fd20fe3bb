//! Attribute numbers shardius reads or writes, by the RFC or vendor
//! dictionary that defines them. Unknown attributes are carried as plain
//! numbers, so nothing here limits what a packet may contain.

/// RFC 2865 / 2866 / 2869 / 3162 / 5176 / 5997 attribute types.
pub mod attr {
    pub const USER_NAME: u8 = 1;
    pub const USER_PASSWORD: u8 = 2;
    pub const CHAP_PASSWORD: u8 = 3;
    pub const NAS_IP_ADDRESS: u8 = 4;
    pub const NAS_PORT: u8 = 5;
    pub const SERVICE_TYPE: u8 = 6;
    pub const FRAMED_PROTOCOL: u8 = 7;
    pub const FRAMED_IP_ADDRESS: u8 = 8;
    pub const FRAMED_IP_NETMASK: u8 = 9;
    pub const FILTER_ID: u8 = 11;
    pub const FRAMED_MTU: u8 = 12;
    pub const LOGIN_IP_HOST: u8 = 14;
    pub const LOGIN_SERVICE: u8 = 15;
    pub const REPLY_MESSAGE: u8 = 18;
    pub const STATE: u8 = 24;
    pub const CLASS: u8 = 25;
    pub const VENDOR_SPECIFIC: u8 = 26;
    pub const SESSION_TIMEOUT: u8 = 27;
    pub const IDLE_TIMEOUT: u8 = 28;
    pub const CALLED_STATION_ID: u8 = 30;
    pub const CALLING_STATION_ID: u8 = 31;
    pub const NAS_IDENTIFIER: u8 = 32;
    pub const PROXY_STATE: u8 = 33;
    // RFC 2866 accounting.
    pub const ACCT_STATUS_TYPE: u8 = 40;
    pub const ACCT_DELAY_TIME: u8 = 41;
    pub const ACCT_INPUT_OCTETS: u8 = 42;
    pub const ACCT_OUTPUT_OCTETS: u8 = 43;
    pub const ACCT_SESSION_ID: u8 = 44;
    pub const ACCT_AUTHENTIC: u8 = 45;
    pub const ACCT_SESSION_TIME: u8 = 46;
    pub const ACCT_INPUT_PACKETS: u8 = 47;
    pub const ACCT_OUTPUT_PACKETS: u8 = 48;
    pub const ACCT_TERMINATE_CAUSE: u8 = 49;
    pub const ACCT_MULTI_SESSION_ID: u8 = 50;
    pub const ACCT_LINK_COUNT: u8 = 51;
    // RFC 2869 extensions.
    pub const ACCT_INPUT_GIGAWORDS: u8 = 52;
    pub const ACCT_OUTPUT_GIGAWORDS: u8 = 53;
    pub const EVENT_TIMESTAMP: u8 = 55;
    pub const CHAP_CHALLENGE: u8 = 60;
    pub const NAS_PORT_TYPE: u8 = 61;
    pub const PORT_LIMIT: u8 = 62;
    pub const CONNECT_INFO: u8 = 77;
    pub const EAP_MESSAGE: u8 = 79;
    pub const MESSAGE_AUTHENTICATOR: u8 = 80;
    pub const ACCT_INTERIM_INTERVAL: u8 = 85;
    pub const NAS_PORT_ID: u8 = 87;
    pub const FRAMED_POOL: u8 = 88;
    // RFC 3162 IPv6.
    pub const NAS_IPV6_ADDRESS: u8 = 95;
    pub const FRAMED_INTERFACE_ID: u8 = 96;
    pub const FRAMED_IPV6_PREFIX: u8 = 97;
    pub const FRAMED_IPV6_POOL: u8 = 100;
    // RFC 5176 dynamic authorization.
    pub const ERROR_CAUSE: u8 = 101;
    // RFC 4818.
    pub const DELEGATED_IPV6_PREFIX: u8 = 123;
    // RFC 6911.
    pub const FRAMED_IPV6_ADDRESS: u8 = 168;
}

/// SMI Private Enterprise Numbers used in Vendor-Specific (26).
pub mod vendor {
    pub const MICROSOFT: u32 = 311;
    pub const MIKROTIK: u32 = 14988;
}

/// Microsoft vendor attributes (RFC 2548).
pub mod ms {
    pub const CHAP_RESPONSE: u8 = 1;
    pub const CHAP_ERROR: u8 = 2;
    pub const MPPE_ENCRYPTION_POLICY: u8 = 7;
    pub const MPPE_ENCRYPTION_TYPES: u8 = 8;
    pub const CHAP_CHALLENGE: u8 = 11;
    pub const CHAP_MPPE_KEYS: u8 = 12;
    pub const MPPE_SEND_KEY: u8 = 16;
    pub const MPPE_RECV_KEY: u8 = 17;
    pub const CHAP2_RESPONSE: u8 = 25;
    pub const CHAP2_SUCCESS: u8 = 26;

    /// MS-MPPE-Encryption-Policy: 1 = encryption allowed, 2 = required.
    pub const POLICY_ALLOWED: u32 = 1;
    /// MS-MPPE-Encryption-Types bit mask: 0x2 = 40-bit, 0x4 = 128-bit, 0x8 = 56-bit.
    pub const TYPES_RC4_40_128: u32 = 0x6;
}

/// MikroTik vendor attributes (RouterOS dictionary).
pub mod mikrotik {
    pub const RECV_LIMIT: u8 = 1;
    pub const XMIT_LIMIT: u8 = 2;
    pub const GROUP: u8 = 3;
    /// "rx/tx" from the router's view: the subscriber's upload/download.
    pub const RATE_LIMIT: u8 = 8;
    pub const REALM: u8 = 9;
    pub const HOST_IP: u8 = 10;
    pub const ADDRESS_LIST: u8 = 19;
}

/// Acct-Status-Type values (RFC 2866 §5.1).
pub mod acct_status {
    pub const START: u32 = 1;
    pub const STOP: u32 = 2;
    pub const INTERIM_UPDATE: u32 = 3;
    pub const ACCOUNTING_ON: u32 = 7;
    pub const ACCOUNTING_OFF: u32 = 8;
}

/// Error-Cause values (RFC 5176 §3.5).
pub mod error_cause {
    pub const RESIDUAL_SESSION_CONTEXT_REMOVED: u32 = 201;
    pub const INVALID_EAP_PACKET: u32 = 202;
    pub const UNSUPPORTED_ATTRIBUTE: u32 = 401;
    pub const MISSING_ATTRIBUTE: u32 = 402;
    pub const NAS_IDENTIFICATION_MISMATCH: u32 = 403;
    pub const INVALID_REQUEST: u32 = 404;
    pub const UNSUPPORTED_SERVICE: u32 = 405;
    pub const UNSUPPORTED_EXTENSION: u32 = 406;
    pub const INVALID_ATTRIBUTE_VALUE: u32 = 407;
    pub const ADMINISTRATIVELY_PROHIBITED: u32 = 501;
    pub const REQUEST_NOT_ROUTABLE: u32 = 502;
    pub const SESSION_CONTEXT_NOT_FOUND: u32 = 503;
    pub const SESSION_CONTEXT_NOT_REMOVABLE: u32 = 504;
    pub const OTHER_PROXY_PROCESSING_ERROR: u32 = 505;
    pub const RESOURCES_UNAVAILABLE: u32 = 506;
    pub const REQUEST_INITIATED: u32 = 507;
    pub const MULTIPLE_SESSION_SELECTION_UNSUPPORTED: u32 = 508;

    /// The RFC 5176 name of an Error-Cause value, for operator-facing output.
    pub fn name(value: u32) -> &'static str {
        match value {
            RESIDUAL_SESSION_CONTEXT_REMOVED => "Residual-Session-Context-Removed",
            INVALID_EAP_PACKET => "Invalid-EAP-Packet",
            UNSUPPORTED_ATTRIBUTE => "Unsupported-Attribute",
            MISSING_ATTRIBUTE => "Missing-Attribute",
            NAS_IDENTIFICATION_MISMATCH => "NAS-Identification-Mismatch",
            INVALID_REQUEST => "Invalid-Request",
            UNSUPPORTED_SERVICE => "Unsupported-Service",
            UNSUPPORTED_EXTENSION => "Unsupported-Extension",
            INVALID_ATTRIBUTE_VALUE => "Invalid-Attribute-Value",
            ADMINISTRATIVELY_PROHIBITED => "Administratively-Prohibited",
            REQUEST_NOT_ROUTABLE => "Request-Not-Routable",
            SESSION_CONTEXT_NOT_FOUND => "Session-Context-Not-Found",
            SESSION_CONTEXT_NOT_REMOVABLE => "Session-Context-Not-Removable",
            OTHER_PROXY_PROCESSING_ERROR => "Other-Proxy-Processing-Error",
            RESOURCES_UNAVAILABLE => "Resources-Unavailable",
            REQUEST_INITIATED => "Request-Initiated",
            MULTIPLE_SESSION_SELECTION_UNSUPPORTED => "Multiple-Session-Selection-Unsupported",
            _ => "Unknown-Error-Cause",
        }
    }
}

// Package subject maps Phoenix topics to NATS subjects and back.
//
// A topic "ns:seg1:seg2" becomes "<prefix>.ns.seg1.seg2". Inside a segment
// the bytes [A-Za-z0-9_-] are kept and every other byte is written "=HH"
// (upper-case hex). "=" rather than "%" because the same token is reused in
// NATS KV keys, which allow "=" but not "%".
//
// The rules exist so that no client-chosen topic can reach a subject it was
// not meant to: every segment is exactly one literal token, so a topic can
// never produce a wildcard ("*", ">"), an extra or empty token, whitespace or
// a "$"-prefixed (system) subject. The encoding is canonical, which makes Map
// injective and Unmap its exact inverse: Unmap refuses any subject Map could
// not have produced, rather than guessing.
//
// The package is stdlib-only so services in other repositories can copy or
// import it to compute the subject of a channel.
package subject

package publisher

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// The JSON body of the HTTP API may carry a JSON payload as a JSON value,
// "data", instead of base64 in "payload". It cannot be a field of
// fabric.v1.PublishRequest: in protobuf's JSON mapping a field holding any
// JSON value is google.protobuf.Value, which goes through float64 (an
// integer beyond 2^53 comes out changed) and a map (key order is lost). So
// "data" is taken out of the body here, kept as the exact bytes the client
// sent (whitespace between tokens removed, nothing re-encoded), and the
// rest of the object is handed to protojson.

// errBothPayloads answers a request that sets both forms.
var errBothPayloads = errors.New(`give the payload as "payload" (base64) or as "data" (a JSON value), not both`)

// jsonMember is one member of a JSON object, its value's bytes verbatim.
type jsonMember struct {
	key   string
	value json.RawMessage
}

// readObject splits a JSON object into its members, in order. It fails on
// anything but exactly one object.
func readObject(b []byte) ([]jsonMember, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	if tok, err := dec.Token(); err != nil {
		return nil, jsonError(err, dec)
	} else if tok != json.Delim('{') {
		return nil, errors.New("body is not a JSON object")
	}
	var ms []jsonMember
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, jsonError(err, dec)
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, jsonError(err, dec)
		}
		ms = append(ms, jsonMember{tok.(string), v})
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return nil, jsonError(err, dec)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("body is not valid JSON: data after the object (offset %d)", dec.InputOffset())
	}
	return ms, nil
}

func jsonError(err error, dec *json.Decoder) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return errors.New("body is not valid JSON: unexpected end")
	}
	return fmt.Errorf("body is not valid JSON (offset %d): %v", dec.InputOffset(), err)
}

// writeObject assembles members into an object again.
func writeObject(ms []jsonMember) []byte {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, m := range ms {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(m.key) // a string always marshals
		b.Write(k)
		b.WriteByte(':')
		b.Write(m.value)
	}
	b.WriteByte('}')
	return b.Bytes()
}

// extractData takes "data" out of one PublishRequest object. data is nil
// when the member is absent or null (null is "not set", as protojson reads
// it); hasPayload reports a "payload" member beside it.
func extractData(obj []byte) (rest, data []byte, hasPayload bool, err error) {
	ms, err := readObject(obj)
	if err != nil {
		return nil, nil, false, err
	}
	kept := ms[:0]
	seen := false
	for _, m := range ms {
		switch m.key {
		case "data":
			if seen {
				return nil, nil, false, errors.New(`"data" given twice`)
			}
			seen = true
			if string(m.value) != "null" {
				var c bytes.Buffer
				_ = json.Compact(&c, m.value) // cannot fail: the decoder checked it
				data = c.Bytes()
			}
			continue
		case "payload":
			hasPayload = string(m.value) != "null"
		}
		kept = append(kept, m)
	}
	if !seen {
		return obj, nil, false, nil // untouched
	}
	if data != nil && hasPayload {
		return nil, nil, false, errBothPayloads
	}
	return writeObject(kept), data, hasPayload, nil
}

// extractBatchData does the same for each of a PublishBatchRequest's
// messages; datas[i] belongs to messages[i].
func extractBatchData(obj []byte) (rest []byte, datas [][]byte, err error) {
	ms, err := readObject(obj)
	if err != nil {
		return nil, nil, err
	}
	for i, m := range ms {
		if m.key != "messages" || string(m.value) == "null" {
			continue
		}
		var list []json.RawMessage
		if err := json.Unmarshal(m.value, &list); err != nil {
			return nil, nil, errors.New(`"messages" is not an array`)
		}
		datas = make([][]byte, len(list))
		for j, raw := range list {
			r, d, _, err := extractData(raw)
			if err != nil {
				return nil, nil, fmt.Errorf("message %d: %w", j, err)
			}
			list[j], datas[j] = r, d
		}
		ms[i].value, _ = json.Marshal(list) // RawMessages are written verbatim
	}
	return writeObject(ms), datas, nil
}

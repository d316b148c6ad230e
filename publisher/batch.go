package publisher

import (
	"context"
	"fmt"

	fabricv1 "github.com/fabric-rt/fabric/schema/gen/fabricv1"
)

// Message is one message of PublishAll.
type Message struct {
	Topic, Event string
	Payload      []byte
	Options      []Option
}

// PublishAll validates every message, then publishes them concurrently and
// returns one Result per message in order. One invalid message fails the
// call before anything is sent. On a send failure the error is a
// *TopicError naming the failed messages; the others may have been stored,
// so give each an idempotency key and retry the whole call.
func (p *Publisher) PublishAll(ctx context.Context, msgs []Message) ([]Result, error) {
	ms := make([]*prepared, len(msgs))
	topics := make([]string, len(msgs))
	for i, m := range msgs {
		pm, err := p.prepare(m.Topic, m.Event, m.Payload, m.Options)
		if err != nil {
			return nil, fmt.Errorf("message %d: %w", i, err)
		}
		ms[i], topics[i] = pm, m.Topic
	}
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	results := make([]Result, len(ms))
	errs := make([]error, len(ms))
	p.sendAll(ctx, ms, results, errs, func(m *prepared) string { return m.idemKey })
	return results, joinTopicErrors(topics, errs)
}

// RequestOptions turns a PublishRequest's optional fields (idempotency
// key, content type, headers) into Options.
func RequestOptions(r *fabricv1.PublishRequest) []Option { return requestOptions(r) }

// ExtractData takes the JSON payload "data" out of one JSON request object
// (PublishRequest, or any object with a "data" member meaning the same),
// byte-exact; see jsondata.go. data is nil when absent or null; giving
// both "data" and "payload" is an error.
func ExtractData(obj []byte) (rest, data []byte, err error) {
	rest, data, _, err = extractData(obj)
	return rest, data, err
}

// ExtractBatchData does ExtractData for every element of "messages";
// datas[i] belongs to messages[i].
func ExtractBatchData(obj []byte) (rest []byte, datas [][]byte, err error) {
	return extractBatchData(obj)
}

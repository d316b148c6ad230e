package bench

import (
	"bytes"
	"io"
	"sync"

	"github.com/gobwas/httphead"
	"github.com/gobwas/ws/wsflate"
	"github.com/klauspost/compress/flate"
)

// SystemFabricDeflate is Fabric with --compression, measured with clients
// that offer permessage-deflate (as browsers do) and inflate what arrives
// compressed: `--systems fabric,fabric-deflate` compares the two in one run.
const SystemFabricDeflate = "fabric-deflate"

// SystemCentrifugoDeflate is Centrifugo with its WebSocket compression on
// (websocket.compression, messages from centrifugoCompressionMinSize bytes
// on, its default level 1), measured with the same deflating clients.
const SystemCentrifugoDeflate = "centrifugo-deflate"

// centrifugoCompressionMinSize is Centrifugo's websocket.compression_min_size
// in centrifugo-deflate: Fabric's default --compression-threshold, so both
// leave the same messages plain.
const centrifugoCompressionMinSize = 256

// deflateOffer is the extension offer of a --deflate client.
func deflateOffer() []httphead.Option {
	return []httphead.Option{wsflate.Parameters{ClientMaxWindowBits: 15}.Option()}
}

// inflaters are shared by a worker's connections: a reader holds ~40 KiB
// of window and tables, too much for each of 5000 idle connections.
var inflaters sync.Pool

// inflateInto inflates a compressed message (RFC 7692: its 00 00 ff ff
// appended) into *buf, reused, and returns it.
func inflateInto(p []byte, buf *[]byte) ([]byte, error) {
	src := io.MultiReader(bytes.NewReader(p), bytes.NewReader([]byte{0, 0, 0xff, 0xff}))
	r, _ := inflaters.Get().(io.ReadCloser)
	if r == nil {
		r = flate.NewReader(src)
	} else if err := r.(flate.Resetter).Reset(src, nil); err != nil {
		return nil, err
	}
	defer inflaters.Put(r)
	out := bytes.NewBuffer((*buf)[:0])
	_, err := io.Copy(out, r)
	*buf = out.Bytes()
	if err != nil && err != io.ErrUnexpectedEOF {
		return nil, err
	}
	return *buf, nil
}

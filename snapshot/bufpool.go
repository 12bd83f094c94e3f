package snapshot

import (
	"fmt"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// snapshotMessageBuffer fits one snapshot message: etcd sends 32 KiB
// blobs, and a message with its framing is a little more.
const snapshotMessageBuffer = 64 << 10

// messagePool hands out receive buffers of one size. gRPC's default pool
// rounds a 32 KiB message up to a zeroed 1 MiB buffer, which costs more CPU
// than hashing the snapshot; the bytes handed out are always filled before
// use, so reused buffers need no zeroing.
type messagePool struct{ pool sync.Pool }

func (p *messagePool) Get(n int) *[]byte {
	if n <= snapshotMessageBuffer {
		if b, ok := p.pool.Get().(*[]byte); ok {
			*b = (*b)[:n]
			return b
		}
		b := make([]byte, n, snapshotMessageBuffer)
		return &b
	}
	b := make([]byte, n)
	return &b
}

func (p *messagePool) Put(b *[]byte) {
	if cap(*b) == snapshotMessageBuffer {
		p.pool.Put(b)
	}
}

// snapshotCodec is gRPC's proto codec with its message buffers drawn from
// messagePool instead of the default pool.
type snapshotCodec struct {
	encoding.CodecV2
	pool *messagePool
}

func (c snapshotCodec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("unmarshal %T: not a protobuf message", v)
	}
	buf := data.MaterializeToBuffer(c.pool)
	defer buf.Free()
	return proto.Unmarshal(buf.ReadOnlyData(), m)
}

// snapshotDialOptions are the gRPC options of the client that streams.
var snapshotDialOptions = []grpc.DialOption{
	grpc.WithDefaultCallOptions(grpc.ForceCodecV2(snapshotCodec{CodecV2: encoding.GetCodecV2("proto"), pool: &messagePool{}})),
}

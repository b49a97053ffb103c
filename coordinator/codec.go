package coordinator

import (
	"github.com/hivefleet/hive/coordinator/render"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
)

// preEncoded is a message already in protobuf wire form. The server's
// codec sends its bytes as they are; everything else goes through the
// standard proto codec.
type preEncoded struct{ b []byte }

// codec is the standard "proto" codec that also passes preEncoded through,
// so a watch sends a node state without marshalling it again (the renderer
// encoded it once to hash it).
type codec struct{ encoding.CodecV2 }

func newCodec() codec { return codec{encoding.GetCodecV2("proto")} }

func (c codec) Marshal(v any) (mem.BufferSlice, error) {
	if p, ok := v.(*preEncoded); ok {
		return mem.BufferSlice{mem.SliceBuffer(p.b)}, nil
	}
	return c.CodecV2.Marshal(v)
}

// Field numbers of NodeState and WatchNodeStateResponse (see state.proto
// and coordinator.proto).
const (
	fieldWatchState     = 1
	fieldNodeStateHash  = 3
	fieldNodeStateIndex = 7
)

// encodeWatchResponse returns the wire form of a WatchNodeStateResponse
// carrying out.State with raft_index set, from the renderer's encoding.
func encodeWatchResponse(out *render.Rendered, index uint64) *preEncoded {
	inner := make([]byte, 0, len(out.Encoded)+len(out.State.GetHash())+16)
	inner = append(inner, out.Encoded...)
	inner = protowire.AppendTag(inner, fieldNodeStateHash, protowire.BytesType)
	inner = protowire.AppendString(inner, out.State.GetHash())
	if index != 0 {
		inner = protowire.AppendTag(inner, fieldNodeStateIndex, protowire.VarintType)
		inner = protowire.AppendVarint(inner, index)
	}
	msg := make([]byte, 0, len(inner)+8)
	msg = protowire.AppendTag(msg, fieldWatchState, protowire.BytesType)
	msg = protowire.AppendBytes(msg, inner)
	return &preEncoded{b: msg}
}

package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rserpool/rsp/events"
)

// MaxAutoReplicas is the most replicas Config.Replicas 0 (auto) gives the
// stream and buckets: three copies survive the loss of any one node with
// a quorum left, and more would only slow every write down.
const MaxAutoReplicas = 3

// JetStream API error codes the setup tells apart.
const (
	errCodeClusterNotAvailable   = 10008 // no meta leader (yet): try again
	errCodeNoSuitablePeers       = 10005 // placement: not enough peers
	errCodeInsufficientResources = 10023 // placement: not enough peers with room
	errCodeReplicasNotSupported  = 10074 // R > 1 on a server that is not clustered
)

// placementPatience is how long creating the stream in auto mode keeps
// asking for MaxAutoReplicas while the cluster cannot place them (peers
// of a cluster that just formed report in within seconds) before it
// settles for fewer. With explicit replicas it keeps asking until the
// setup time (Config.StartTimeout) runs out.
const placementPatience = 10 * time.Second

// attemptTimeout bounds one JetStream API request of the setup; one that
// gets no answer is sent again (right after a leader election a request
// may go unanswered).
const attemptTimeout = 2 * time.Second

// isTransientJS tells a JetStream API failure that goes away by itself
// (no meta leader yet, a leader election, a reconnect) from a refusal.
func isTransientJS(err error) bool {
	if errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrJetStreamNotEnabled) ||
		errors.Is(err, nats.ErrDisconnected) || errors.Is(err, nats.ErrConnectionReconnecting) {
		return true
	}
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == errCodeClusterNotAvailable || apiErr.Code == 503)
}

// isPlacementErr tells a refusal to place as many replicas as asked.
func isPlacementErr(err error) bool {
	return isMissingPeers(err) || isAPIErr(err, errCodeReplicasNotSupported)
}

// isMissingPeers tells a cluster that has too few peers (online) to
// place the replicas asked: it may be forming still.
func isMissingPeers(err error) bool {
	return isAPIErr(err, errCodeNoSuitablePeers) || isAPIErr(err, errCodeInsufficientResources)
}

func isAPIErr(err error, code jetstream.ErrorCode) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == code
}

// retryJS runs op until it succeeds, fails for a reason other than a
// transient one (isTransientJS, or also retryAlso), or ctx ends; the
// pauses grow from 100 ms to 2 s, with jitter.
func retryJS[T any](ctx context.Context, log *slog.Logger, what string, retryAlso func(error) bool, op func(context.Context) (T, error)) (T, error) {
	b := backoff.WithContext(newBackoff(100*time.Millisecond, 2*time.Second), ctx)
	var result T
	err := backoff.RetryNotify(func() error {
		// Each attempt gets its own bound, so one lost request does not
		// use up the whole setup time.
		actx, cancel := context.WithTimeout(ctx, attemptTimeout)
		defer cancel()
		var err error
		result, err = op(actx)
		if err != nil && ctx.Err() == nil && (isTransientJS(err) || (retryAlso != nil && retryAlso(err))) {
			return err
		}
		if err != nil {
			return backoff.Permanent(err)
		}
		return nil
	}, b, func(err error, next time.Duration) {
		log.Info("JetStream not ready: trying again", "what", what, "err", err, "in", next.Round(time.Millisecond))
	})
	return result, err
}

// setupStream creates the stream RSP_EVENTS, or brings the settings of
// an existing one up to date, and returns it with the replicas that the
// buckets get when they are created: the stream's own.
//
// With Config.Replicas set, that is the number of replicas, also of an
// existing stream (which JetStream then scales). With 0 (auto), an
// existing stream keeps its replicas, and a new one gets
// min(MaxAutoReplicas, JetStream servers of the cluster): the cluster
// itself says how many it can place (R1 on a server that is not
// clustered).
func (n *NameServer) setupStream(ctx context.Context, nc *nats.Conn, js jetstream.JetStream) (jetstream.Stream, int, error) {
	log := n.cfg.Logger
	want := jetstream.StreamConfig{
		Name: events.StreamName, Subjects: events.EventSubjects(), Storage: jetstream.FileStorage,
		Replicas: n.cfg.Replicas, Duplicates: duplicatesWindow, MaxAge: eventsRetention, MaxMsgSize: maxEventSize,
	}
	stream, err := retryJS(ctx, log, "stream "+events.StreamName, nil, func(ctx context.Context) (jetstream.Stream, error) {
		return js.Stream(ctx, events.StreamName)
	})
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		return n.createStream(ctx, nc, js, want)
	case err != nil:
		return nil, 0, fmt.Errorf("stream %s: %w", events.StreamName, err)
	}
	have := stream.CachedInfo().Config
	if want.Replicas == 0 {
		want.Replicas = have.Replicas
	}
	if have.Replicas == want.Replicas && have.Storage == want.Storage && have.Duplicates == want.Duplicates &&
		have.MaxAge == want.MaxAge && have.MaxMsgSize == want.MaxMsgSize && slices.Equal(slices.Sorted(slices.Values(have.Subjects)), slices.Sorted(slices.Values(want.Subjects))) {
		return stream, max(have.Replicas, 1), nil
	}
	cfg := have
	cfg.Subjects, cfg.Storage, cfg.Replicas, cfg.Duplicates, cfg.MaxAge, cfg.MaxMsgSize = want.Subjects, want.Storage, want.Replicas, want.Duplicates, want.MaxAge, want.MaxMsgSize
	stream, err = retryJS(ctx, log, "update stream "+events.StreamName, isMissingPeers, func(ctx context.Context) (jetstream.Stream, error) {
		return js.UpdateStream(ctx, cfg)
	})
	if err != nil {
		return nil, 0, fmt.Errorf("update stream %s: %w", events.StreamName, err)
	}
	if have.Replicas != want.Replicas {
		log.Info("stream replicas changed", "stream", events.StreamName, "from", have.Replicas, "to", want.Replicas)
	}
	return stream, want.Replicas, nil
}

// createStream creates RSP_EVENTS; in auto mode it asks for
// MaxAutoReplicas and, while the cluster cannot place them, for fewer.
func (n *NameServer) createStream(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, cfg jetstream.StreamConfig) (jetstream.Stream, int, error) {
	log := n.cfg.Logger
	tries := []int{cfg.Replicas}
	if cfg.Replicas == 0 {
		tries = []int{1}
		if nc.ConnectedClusterName() != "" {
			tries = []int{MaxAutoReplicas, 2, 1}
		}
	}
	for i, r := range tries {
		cfg.Replicas = r
		tctx := ctx
		var retryAlso func(error) bool
		switch {
		case len(tries) == 1 && r > 1:
			// Explicit replicas: a cluster that is forming gets them.
			retryAlso = isMissingPeers
		case i == 0 && len(tries) > 1:
			// A cluster that just formed may not know all its peers yet.
			var cancel context.CancelFunc
			tctx, cancel = context.WithTimeout(ctx, placementPatience)
			defer cancel()
			retryAlso = isMissingPeers
		}
		stream, err := retryJS(tctx, log, "create stream "+events.StreamName, retryAlso, func(ctx context.Context) (jetstream.Stream, error) {
			return js.CreateStream(ctx, cfg)
		})
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return n.setupStream(ctx, nc, js) // another replica was first
		}
		if err != nil && i < len(tries)-1 && (isPlacementErr(err) || (ctx.Err() == nil && tctx.Err() != nil)) {
			log.Warn("the cluster cannot place the stream with these replicas: trying fewer", "stream", events.StreamName, "replicas", r, "err", err)
			continue
		}
		if err != nil {
			return nil, 0, fmt.Errorf("create stream %s (%d replicas): %w", events.StreamName, r, err)
		}
		log.Info("stream created", "stream", events.StreamName, "replicas", r, "auto", n.cfg.Replicas == 0, "cluster", nc.ConnectedClusterName())
		if r < MaxAutoReplicas && nc.ConnectedClusterName() != "" {
			log.Warn("the stream and buckets have fewer than 3 replicas: the loss of one NATS server can stop rsp; once the cluster has 3 JetStream servers, start a name server with --replicas 3 to scale them",
				"replicas", r)
		}
		return stream, r, nil
	}
	return nil, 0, errors.New("unreachable")
}

// ensureBucket opens the bucket of cfg, creating it (with cfg.Replicas)
// when it is missing. With explicit replicas (Config.Replicas set), an
// existing bucket with other replicas is scaled to them; otherwise it is
// left as it is.
func (n *NameServer) ensureBucket(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	log := n.cfg.Logger
	name := cfg.Bucket
	kv, err := retryJS(ctx, log, "bucket "+name, nil, func(ctx context.Context) (jetstream.KeyValue, error) {
		return js.KeyValue(ctx, name)
	})
	if err == nil {
		if n.cfg.Replicas > 0 {
			if err := n.scaleBucket(ctx, js, name, n.cfg.Replicas); err != nil {
				return nil, err
			}
		}
		return kv, nil
	}
	if !errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, fmt.Errorf("bucket %s: %w", name, err)
	}
	kv, err = retryJS(ctx, log, "create bucket "+name, isMissingPeers, func(ctx context.Context) (jetstream.KeyValue, error) {
		return js.CreateKeyValue(ctx, cfg)
	})
	if errors.Is(err, jetstream.ErrBucketExists) {
		return js.KeyValue(ctx, name) // another replica created it first
	}
	if err != nil {
		return nil, fmt.Errorf("create bucket %s (%d replicas): %w", name, cfg.Replicas, err)
	}
	log.Debug("bucket created", "bucket", name, "replicas", cfg.Replicas)
	return kv, nil
}

// scaleBucket sets the replicas of bucket's stream, changing nothing else.
func (n *NameServer) scaleBucket(ctx context.Context, js jetstream.JetStream, bucket string, replicas int) error {
	name := "KV_" + bucket
	stream, err := retryJS(ctx, n.cfg.Logger, "stream "+name, nil, func(ctx context.Context) (jetstream.Stream, error) {
		return js.Stream(ctx, name)
	})
	if err != nil {
		return fmt.Errorf("bucket %s: %w", bucket, err)
	}
	cfg := stream.CachedInfo().Config
	if cfg.Replicas == replicas {
		return nil
	}
	from := cfg.Replicas
	cfg.Replicas = replicas
	if _, err := retryJS(ctx, n.cfg.Logger, "scale bucket "+bucket, isMissingPeers, func(ctx context.Context) (jetstream.Stream, error) {
		return js.UpdateStream(ctx, cfg)
	}); err != nil {
		return fmt.Errorf("bucket %s: %d replicas: %w", bucket, replicas, err)
	}
	n.cfg.Logger.Info("bucket replicas changed", "bucket", bucket, "from", from, "to", replicas)
	return nil
}

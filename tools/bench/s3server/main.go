// Command s3server is the benchmark's S3 endpoint and its no-disk ceiling client.
//
// `s3server serve` runs gofakes3 with its in-memory backend on a loopback port: objects live in
// RAM and a ranged GET is a slice of a byte array written to the socket, so the server costs
// little CPU per byte and is not what limits a client on the same machine (moto, in Python,
// re-reads a whole object for every ranged GET). `-seed-*` fills a bucket at start with
// random objects, quicker than uploading them through the protocol. `-seed-checksum-bucket` puts
// the same objects in a second bucket that also keeps each one's CRC64NVME, as AWS does for every
// object uploaded without a checksum: a HEAD or whole GET that asks (x-amz-checksum-mode:
// ENABLED) is told it, so a client can verify with a CRC instead of the ETag's md5.
//
// `s3server get` is the ceiling: the same ranged GETs a download tool makes, in parallel, each
// body thrown away (no disk, no hashing), so its MB/s is what the server and loopback allow.
package main

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"encoding/xml"
	"flag"
	"fmt"
	"hash/crc64"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: s3server serve|get [flags]")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "serve":
		serve(os.Args[2:])
	case "get":
		get(os.Args[2:])
	default:
		fmt.Fprintf(os.Stderr, "unknown command %q: use serve or get\n", os.Args[1])
		os.Exit(2)
	}
}

func serve(args []string) {
	flags := flag.NewFlagSet("serve", flag.ExitOnError)
	addr := flags.String("addr", "127.0.0.1:0", "listen address (loopback)")
	bucket := flags.String("seed-bucket", "", "create this bucket and fill it")
	prefix := flags.String("seed-prefix", "model", "key prefix of the seeded objects")
	files := flags.Int("seed-files", 0, "how many objects to seed")
	size := flags.Int64("seed-size", 0, "bytes per seeded object")
	checksumBucket := flags.String("seed-checksum-bucket", "", "the same objects, with CRC64NVMEs")
	_ = flags.Parse(args)

	backend := s3mem.New()
	faker := gofakes3.New(backend, gofakes3.WithTimeSkewLimit(0), gofakes3.WithIntegrityCheck(false))
	sums := withChecksums{faker.Server(), map[string]string{}}
	if *bucket != "" {
		buckets := []string{*bucket}
		if *checksumBucket != "" {
			buckets = append(buckets, *checksumBucket)
		}
		for _, name := range buckets {
			if err := backend.CreateBucket(name); err != nil {
				log.Fatal(err)
			}
		}
		source := rand.NewChaCha8([32]byte{})
		for i := 0; i < *files; i++ {
			body := make([]byte, *size)
			_, _ = source.Read(body)
			key := fmt.Sprintf("%s/model-%05d-of-%05d.safetensors", *prefix, i+1, *files)
			for _, name := range buckets {
				if _, err := backend.PutObject(name, key, map[string]string{}, bytes.NewReader(body), *size, nil); err != nil {
					log.Fatal(err)
				}
			}
			if *checksumBucket != "" {
				sum := binary.BigEndian.AppendUint64(nil, crc64.Checksum(body, crc64nvme))
				sums.crc64nvme[*checksumBucket+"/"+key] = base64.StdEncoding.EncodeToString(sum)
			}
		}
	}
	listener, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	// The caller reads this line to learn the port.
	fmt.Printf("http://%s\n", listener.Addr())
	_ = os.Stdout.Sync()
	log.Fatal(http.Serve(listener, sums))
}

// CRC-64/NVME (the polynomial 0xad93d23594c93659, bit-reversed as hash/crc64 takes it), the
// checksum S3 keeps by default.
var crc64nvme = crc64.MakeTable(0x9a6c9329ac4bc9b5)

// withChecksums adds S3's checksum headers to gofakes3's answers for the objects it knows the
// CRC64NVME of ("bucket/key"), when the request asks for them and is for the whole object.
type withChecksums struct {
	next      http.Handler
	crc64nvme map[string]string
}

func (c withChecksums) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	whole := r.Header.Get("Range") == "" && r.URL.Query().Get("partNumber") == ""
	if r.Header.Get("x-amz-checksum-mode") == "ENABLED" && whole {
		if sum, ok := c.crc64nvme[strings.TrimPrefix(r.URL.Path, "/")]; ok {
			w.Header().Set("x-amz-checksum-crc64nvme", sum)
			w.Header().Set("x-amz-checksum-type", "FULL_OBJECT")
		}
	}
	c.next.ServeHTTP(w, r)
}

type listing struct {
	Contents []struct {
		Key  string
		Size int64
	}
	IsTruncated           bool
	NextContinuationToken string
}

type rangeJob struct {
	key        string
	start, end int64
}

func get(args []string) {
	flags := flag.NewFlagSet("get", flag.ExitOnError)
	endpoint := flags.String("endpoint", "", "http://host:port of the S3 server")
	bucket := flags.String("bucket", "", "bucket")
	prefix := flags.String("prefix", "", "fetch every object under prefix/")
	concurrency := flags.Int("concurrency", 8, "parallel connections")
	chunk := flags.Int64("chunk", 16<<20, "bytes per ranged GET")
	_ = flags.Parse(args)

	client := &http.Client{Transport: &http.Transport{
		MaxIdleConnsPerHost: *concurrency,
		MaxConnsPerHost:     *concurrency,
		DisableCompression:  true,
	}}
	jobs := make(chan rangeJob, 1024)
	var total atomic.Int64
	var workers sync.WaitGroup
	started := time.Now()
	for w := 0; w < *concurrency; w++ {
		workers.Add(1)
		go func() {
			defer workers.Done()
			for job := range jobs {
				total.Add(fetch(client, *endpoint+"/"+*bucket+"/"+job.key, job.start, job.end))
			}
		}()
	}
	for _, object := range list(client, *endpoint, *bucket, *prefix+"/") {
		for start := int64(0); start < object.Size; start += *chunk {
			jobs <- rangeJob{object.Key, start, min(start+*chunk, object.Size)}
		}
	}
	close(jobs)
	workers.Wait()
	seconds := time.Since(started).Seconds()
	_ = json.NewEncoder(os.Stdout).Encode(map[string]any{"bytes": total.Load(), "seconds": seconds})
}

func list(client *http.Client, endpoint, bucket, prefix string) []struct {
	Key  string
	Size int64
} {
	var objects []struct {
		Key  string
		Size int64
	}
	token := ""
	for {
		query := url.Values{"list-type": {"2"}, "prefix": {prefix}}
		if token != "" {
			query.Set("continuation-token", token)
		}
		response, err := client.Get(endpoint + "/" + bucket + "?" + query.Encode())
		if err != nil {
			log.Fatal(err)
		}
		var page listing
		err = xml.NewDecoder(response.Body).Decode(&page)
		response.Body.Close()
		if err != nil {
			log.Fatal(err)
		}
		objects = append(objects, page.Contents...)
		if !page.IsTruncated {
			return objects
		}
		token = page.NextContinuationToken
	}
}

func fetch(client *http.Client, location string, start, end int64) int64 {
	request, err := http.NewRequest(http.MethodGet, location, nil)
	if err != nil {
		log.Fatal(err)
	}
	request.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", start, end-1))
	response, err := client.Do(request)
	if err != nil {
		log.Fatal(err)
	}
	defer response.Body.Close()
	if response.StatusCode != http.StatusPartialContent {
		log.Fatalf("GET %s: %s", location, response.Status)
	}
	n, err := io.Copy(io.Discard, response.Body)
	if err != nil || n != end-start {
		log.Fatalf("GET %s: %d of %d bytes: %v", location, n, end-start, err)
	}
	return n
}

/**
 * Which ffmpeg demuxer and decoders a file may use, chosen from its magic bytes. ffmpeg is then run with
 * that demuxer forced (`-f`) and only those decoders allowed, so a hostile file cannot steer it into a
 * playlist/concat demuxer (which open further URLs) or one of its hundreds of rarely used decoders.
 */
export interface Container {
  /** The format's common name, for messages (`MP3`, `WebM/Matroska`). */
  format: string;
  /** ffmpeg demuxer name (`-f`, `-format_whitelist`). */
  demuxer: string;
  /** Allowed decoder names (`-codec_whitelist`). */
  decoders: string[];
  /** Needs to seek backwards (MP4/MOV with the index at the end): read through ffmpeg's `cache:` protocol. */
  seeks: boolean;
}

const AUDIO_DECODERS = ['aac', 'aac_fixed', 'alac', 'mp3float', 'mp3', 'flac', 'vorbis', 'libvorbis', 'opus', 'libopus', 'pcm_s16le', 'pcm_s24le', 'pcm_f32le'];
const VIDEO_DECODERS = ['h264', 'hevc', 'mpeg4', 'vp8', 'vp9', 'libvpx', 'libvpx-vp9', 'av1', 'libdav1d', 'libaom-av1', 'mjpeg', 'ffv1'];

const at = (bytes: Uint8Array, offset: number, ascii: string) =>
  bytes.length >= offset + ascii.length && [...ascii].every((ch, i) => bytes[offset + i] === ch.charCodeAt(0));
const isMov = (b: Uint8Array) => at(b, 4, 'ftyp');
const isMatroska = (b: Uint8Array) => b.length >= 4 && b[0] === 0x1a && b[1] === 0x45 && b[2] === 0xdf && b[3] === 0xa3;
/** An MPEG audio frame sync (11 set bits), as a file without an ID3 tag starts. */
const isMpegAudio = (b: Uint8Array) => b.length >= 2 && b[0] === 0xff && (b[1]! & 0xe0) === 0xe0;

export function audioContainer(bytes: Uint8Array): Container | undefined {
  if (at(bytes, 0, 'ID3') || isMpegAudio(bytes)) return { format: 'MP3', demuxer: 'mp3', decoders: ['mp3float', 'mp3'], seeks: false };
  if (at(bytes, 0, 'fLaC')) return { format: 'FLAC', demuxer: 'flac', decoders: ['flac'], seeks: false };
  if (at(bytes, 0, 'OggS')) return { format: 'Ogg', demuxer: 'ogg', decoders: ['vorbis', 'libvorbis', 'opus', 'libopus', 'flac'], seeks: false };
  if (isMov(bytes)) return { format: 'MP4/MOV', demuxer: 'mov', decoders: AUDIO_DECODERS, seeks: true };
  if (isMatroska(bytes)) return { format: 'WebM/Matroska', demuxer: 'matroska', decoders: AUDIO_DECODERS, seeks: false };
  return undefined;
}

export function videoContainer(bytes: Uint8Array): Container | undefined {
  // Audio decoders too: stream probing opens every stream's decoder, and a refused one fails the file.
  if (isMov(bytes)) return { format: 'MP4/MOV', demuxer: 'mov', decoders: [...VIDEO_DECODERS, ...AUDIO_DECODERS], seeks: true };
  if (isMatroska(bytes)) return { format: 'WebM/Matroska', demuxer: 'matroska', decoders: [...VIDEO_DECODERS, ...AUDIO_DECODERS], seeks: false };
  return undefined;
}
